"""Exporting a trained step into a verified bundle: ``export(run, out=...)``."""

from reminder.export.exporter import each_step_exporter, export_bundle

export = export_bundle  # the documented name: reminder.export.export("runs/wh", out="bundles/wh-1")

__all__ = ["each_step_exporter", "export", "export_bundle"]
