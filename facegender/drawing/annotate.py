"""Drawing predictions onto photos (predict.py --annotate): every face boxed and labelled in its
class's colour, and a contact sheet of the face crops. Pillow only: no TensorFlow, no project
module but common and outputs."""

import os

from PIL import Image, ImageDraw, ImageFont

from facegender.core.outputs import atomic_path

# A face whose P(male) is this close to the threshold is drawn as unsure (a dashed box and a
# "?" after its label): another photo of the same face, --tta or a retrained model can move a
# score by that much. A plain round band, not a fitted one; test_script.py's reliability
# diagram shows how far the model's scores can be trusted on your data.
LOW_CONFIDENCE_BAND = 0.15
# One per class name (common.CLASS_NAMES). Okabe-Ito orange and blue: told apart with every
# common kind of colour blindness.
CLASS_COLOURS = {"female": (230, 159, 0), "male": (0, 114, 178)}
TEXT_COLOUR = (255, 255, 255)
SHEET_TILE = 128  # pixels per face crop on the contact sheet
SHEET_COLUMNS = 8
FRAME_WIDTH, FRAME_COLUMNS = 480, 3  # a video's sheet of frames (video.annotate_video)
SHEET_MAX_FACES = 480  # 60 rows: more would make a sheet too tall to look at
# Pillow writes these in RGB as they are; any other file is annotated as <name>.png.
KEPT_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def unsure(p_male, threshold):
    return abs(p_male - threshold) < LOW_CONFIDENCE_BAND


def caption(label, p_male, threshold):
    return f"{label} {p_male:.3f}" + (" ?" if unsure(p_male, threshold) else "")


def font(size):
    try:
        return ImageFont.load_default(size)
    except TypeError:  # Pillow before 10.1 has one bitmap size
        return ImageFont.load_default()


def dashed_rectangle(draw, box, colour, width, dash):
    """The outline of (left, top, right, bottom), inclusive, in dashes `dash` pixels long."""
    left, top, right, bottom = box
    for a, b, horizontal in ((left, right, True), (top, bottom, False)):
        for start in range(a, b + 1, 2 * dash):
            end = min(start + dash - 1, b)
            if horizontal:
                draw.rectangle([start, top, end, top + width - 1], fill=colour)
                draw.rectangle([start, bottom - width + 1, end, bottom], fill=colour)
            else:
                draw.rectangle([left, start, left + width - 1, end], fill=colour)
                draw.rectangle([right - width + 1, start, right, end], fill=colour)


def draw_faces(photo, faces, threshold):
    """A copy of `photo` (a PIL RGB image) with each of `faces`, (x, y, w, h, p_male, label) in
    its pixels, boxed in its class's colour (dashed when unsure) and captioned above the box
    (inside it when the box touches the top). A face given a seventh item (a video's track
    number, '#3') has it before its caption."""
    photo = photo.copy()
    draw = ImageDraw.Draw(photo)
    width = max(2, round(max(photo.size) / 300))
    text = font(max(10, round(max(photo.size) / 40)))
    for x, y, w, h, p_male, label, *prefix in faces:
        colour = CLASS_COLOURS[label]
        box = (x, y, x + w - 1, y + h - 1)
        if unsure(p_male, threshold):
            dashed_rectangle(draw, box, colour, width, dash=max(4, 3 * width))
        else:
            draw.rectangle(box, outline=colour, width=width)
        words = " ".join([*prefix, caption(label, p_male, threshold)])
        left, top, right, bottom = draw.textbbox((0, 0), words, font=text)
        pad = max(2, width)
        tw, th = right - left + 2 * pad, bottom - top + 2 * pad
        ty = y - th if y >= th else y + width
        draw.rectangle([x, ty, x + tw - 1, ty + th - 1], fill=colour)
        draw.text((x + pad - left, ty + pad - top), words, fill=TEXT_COLOUR, font=text)
    return photo


def contact_sheet(tiles, captions, left_out=0):
    """One image of face crops (PIL images), up to SHEET_COLUMNS a row, each over its caption
    (a list of (text, colour) lines), with a header line when some faces were left out."""
    text = font(12)
    line = 16
    tile_h = SHEET_TILE + 2 * line
    header = line + 4 if left_out else 0
    columns = max(1, min(SHEET_COLUMNS, len(tiles)))
    rows = max(1, -(-len(tiles) // columns))
    sheet = Image.new("RGB", (columns * SHEET_TILE, header + rows * tile_h), (255,) * 3)
    draw = ImageDraw.Draw(sheet)
    if left_out:
        draw.text((4, 2), f"{left_out} more faces not shown", fill=(0, 0, 0), font=text)
    for k, (tile, lines) in enumerate(zip(tiles, captions)):
        x, y = (k % columns) * SHEET_TILE, header + (k // columns) * tile_h
        sheet.paste(tile.resize((SHEET_TILE, SHEET_TILE), Image.BILINEAR), (x, y))
        for i, (words, colour) in enumerate(lines):
            draw.text((x + 3, y + SHEET_TILE + 1 + i * line), words, fill=colour, font=text)
    return sheet


def frame_sheet(frames, captions, title, width=FRAME_WIDTH, columns=FRAME_COLUMNS):
    """One image of video frames (PIL images, drawn on), `columns` a row, each shrunk to
    `width` pixels wide over its one-line caption, under a title line."""
    text = font(13)
    line = 18
    heights = [round(f.size[1] * width / f.size[0]) for f in frames] or [0]
    cell_h = max(heights) + line
    columns = max(1, min(columns, len(frames)))
    rows = max(1, -(-len(frames) // columns))
    sheet = Image.new("RGB", (columns * width, line + rows * cell_h), (255,) * 3)
    draw = ImageDraw.Draw(sheet)
    draw.text((4, 2), title, fill=(0, 0, 0), font=text)
    for k, (frame, words) in enumerate(zip(frames, captions)):
        x, y = (k % columns) * width, line + (k // columns) * cell_h
        sheet.paste(frame.resize((width, heights[k]), Image.BILINEAR), (x, y))
        draw.text((x + 3, y + heights[k] + 2), words, fill=(0, 0, 0), font=text)
    return sheet


def copy_names(paths, folder, avoid=()):
    """{path: where its annotated copy goes in `folder`}: the path relative to the folder that
    holds every input, so that two photos of the same name from two folders keep apart; a
    name already taken (an input itself, or the same file given twice) gets _1, _2, ..."""
    parents = [os.path.dirname(os.path.abspath(p)) for p in paths]
    root = os.path.commonpath(parents) if parents else ""
    taken = {os.path.realpath(p) for p in [*paths, *avoid]}
    names = {}
    for path in paths:
        rel = os.path.relpath(os.path.abspath(path), root)
        stem, ext = os.path.splitext(rel)
        if ext.lower() not in KEPT_EXTENSIONS:
            stem, ext = rel, ".png"
        dest, n = os.path.join(folder, stem + ext), 1
        while os.path.realpath(dest) in taken:
            dest, n = os.path.join(folder, f"{stem}_{n}{ext}"), n + 1
        taken.add(os.path.realpath(dest))
        names[path] = dest
    return names


def save(image, path, **kwargs):
    """Write `image` atomically, in the format its extension names."""
    with atomic_path(path) as tmp:
        image.save(tmp, **kwargs)


def sheet_caption(path, face, label, p_male, threshold):
    """A contact-sheet tile's two lines: where the face is from, and what it was called."""
    name = os.path.basename(path) + (f" #{face}" if face is not None else "")
    name = name if len(name) <= 20 else name[:8] + ".." + name[-10:]
    return [(name, (0, 0, 0)), (caption(label, p_male, threshold), CLASS_COLOURS[label])]
