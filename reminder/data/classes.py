"""Class names and palettes of the supported datasets.

Class 0 is background (VOC) or "other" (ADE20k); 255 marks pixels to ignore.
"""

from __future__ import annotations

# the class table's rules and VOC's names and colours live in the contracts, shared by every stage
from reminder.contracts.classes import IGNORE_INDEX, VOC_CLASSES, distinct_colors, voc_palette  # noqa: F401

# The 150 ADE20k SceneParsing classes in label order (1..150); 0 is "other".
ADE_CLASSES: tuple[str, ...] = ("other",) + tuple(
    """wall building sky floor tree ceiling road bed windowpane grass cabinet sidewalk
    person earth door table mountain plant curtain chair car water painting sofa shelf
    house sea mirror rug field armchair seat fence desk rock wardrobe lamp bathtub
    railing cushion base box column signboard chest_of_drawers counter sand sink
    skyscraper fireplace refrigerator grandstand path stairs runway case pool_table
    pillow screen_door stairway river bridge bookcase blind coffee_table toilet flower
    book hill bench countertop stove palm kitchen_island computer swivel_chair boat bar
    arcade_machine hovel bus towel light truck tower chandelier awning streetlight booth
    television_receiver airplane dirt_track apparel pole land bannister escalator ottoman
    bottle buffet poster stage van ship fountain conveyer_belt canopy washer plaything
    swimming_pool stool barrel basket waterfall tent bag minibike cradle oven ball food
    step tank trade_name microwave pot animal bicycle lake dishwasher screen blanket
    sculpture hood sconce vase traffic_light tray ashcan fan pier crt_screen plate
    monitor bulletin_board shower radiator glass clock flag""".split()
)
assert len(ADE_CLASSES) == 151, len(ADE_CLASSES)


def flat_palette() -> list[int]:
    """The VOC palette flattened for ``PIL.Image.putpalette``."""
    return [channel for color in voc_palette() for channel in color]
