"""Class names and palettes of the supported datasets.

Class 0 is background (VOC) or "other" (ADE20k); 255 marks pixels to ignore.
"""

from __future__ import annotations

IGNORE_INDEX = 255

VOC_CLASSES: tuple[str, ...] = (
    "background",
    "aeroplane", "bicycle", "bird", "boat", "bottle",
    "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person",
    "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)

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


def voc_palette(num_colors: int = 256) -> list[tuple[int, int, int]]:
    """The Pascal VOC colour map (bit-interleaved label index), as used in its PNG masks."""
    palette = []
    for label in range(num_colors):
        r = g = b = 0
        value = label
        for shift in range(7, -1, -1):
            r |= ((value >> 0) & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        palette.append((r, g, b))
    return palette


def flat_palette() -> list[int]:
    """The VOC palette flattened for ``PIL.Image.putpalette``."""
    return [channel for color in voc_palette() for channel in color]


def distinct_colors(used, count: int) -> list[tuple[int, int, int]]:
    """``count`` colours, each as far (Euclidean RGB distance) from every colour in ``used``
    and from the ones picked before it as a grid of 8 levels per channel allows (black and
    white excluded: background and borders)."""
    levels = [0, 36, 73, 109, 146, 182, 219, 255]
    grid = [(r, g, b) for r in levels for g in levels for b in levels if (r, g, b) not in ((0, 0, 0), (255, 255, 255))]
    taken = [tuple(int(v) for v in c) for c in used] or [(0, 0, 0)]
    picked: list[tuple[int, int, int]] = []
    for _ in range(count):
        best = max(grid, key=lambda c: (min(sum((a - b) ** 2 for a, b in zip(c, t)) for t in taken), c))
        picked.append(best)
        taken.append(best)
    return picked
