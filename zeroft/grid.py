"""Image grids for reports: rows of equally sized cells, the first column set apart."""

from __future__ import annotations

from PIL import Image, ImageDraw


def make_grid(rows: list[list[Image.Image]], cell: int) -> Image.Image:
    """Paste each row's images side by side at ``cell`` pixels; a line separates column 0 (references)."""
    width = max(len(r) for r in rows)
    grid = Image.new("RGB", (width * cell, len(rows) * cell), (255, 255, 255))
    for y, row in enumerate(rows):
        for x, image in enumerate(row):
            grid.paste(image.convert("RGB").resize((cell, cell)), (x * cell, y * cell))
    ImageDraw.Draw(grid).line([(cell, 0), (cell, grid.height)], fill=(0, 0, 0), width=1)
    return grid
