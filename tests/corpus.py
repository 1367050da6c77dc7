"""A messy real-world image folder, generated at test time, with the expected outcome of each file.

`make_messy_folder(root)` writes FEMALE/ and Male/ class folders full of the things people
actually feed the scripts, and returns {"readable": [...], "unreadable": [...], "ignored": [...]}
as paths, so a test can assert exactly what was read, what was reported and what was passed over.
"""

import io
import os
import struct
import zlib

import numpy as np
from PIL import Image


def _png_header_only(width, height):
    """A PNG whose header claims width x height but carries no pixels (a decompression bomb)."""
    def chunk(kind, payload):
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _jpeg_bytes(img, **kwargs):
    buf = io.BytesIO()
    img.save(buf, format="JPEG", **kwargs)
    return buf.getvalue()


def make_messy_folder(root, seed=0):
    rng = np.random.default_rng(seed)
    out = {"readable": [], "unreadable": [], "ignored": []}

    def photo(size=(48, 40)):
        return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))

    def write(kind, rel, data):
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if isinstance(data, Image.Image):
            data.save(path)
        else:
            with open(path, "wb") as f:
                f.write(data)
        out[kind].append(path)

    for cls in ("FEMALE", "Male"):
        good = _jpeg_bytes(photo())
        # Broken files: reported by name and skipped.
        write("unreadable", f"{cls}/corrupt.jpg", b"\xff\xd8\xff\xe0" + rng.bytes(300))
        write("unreadable", f"{cls}/truncated.jpg", good[: len(good) // 2])
        write("unreadable", f"{cls}/zero_bytes.jpg", b"")
        write("unreadable", f"{cls}/text_named.jpg", b"this is a text file, not a JPEG\n")
        write("unreadable", f"{cls}/bomb.png", _png_header_only(20000, 20000))
        # Unusual but valid images: all read.
        png = io.BytesIO()
        photo().save(png, format="PNG")
        write("readable", f"{cls}/png_named.jpg", png.getvalue())
        write("readable", f"{cls}/grey.jpg", photo().convert("L"))
        write("readable", f"{cls}/cmyk.jpg", photo().convert("CMYK"))
        write("readable", f"{cls}/rgba.png", photo().convert("RGBA"))
        write("readable", f"{cls}/palette.png", photo().convert("P"))
        write("readable", f"{cls}/deep16.png",
              Image.fromarray(rng.integers(0, 65535, (20, 30), dtype=np.uint16)))
        frames = [photo((24, 24)) for _ in range(3)]
        anim = io.BytesIO()
        frames[0].save(anim, format="GIF", save_all=True, append_images=frames[1:])
        write("readable", f"{cls}/animated.gif", anim.getvalue())
        write("readable", f"{cls}/bitmap.bmp", photo())
        write("readable", f"{cls}/photo.webp", photo())
        exif = Image.Exif()
        exif[0x0112] = 6
        write("readable", f"{cls}/rotated_exif.jpg", _jpeg_bytes(photo(), exif=exif))
        write("readable", f"{cls}/tiny.png", photo((1, 1)))
        write("readable", f"{cls}/UPPER.JPG", photo())
        write("readable", f"{cls}/with space.jpg", photo())
        write("readable", f"{cls}/ñandú é.jpeg", photo())
        write("readable", f"{cls}/nested/deeper/inside.jpg", photo())
        # Links: a link to a file is read; a link back up the tree must not loop forever.
        os.symlink(os.path.join(root, cls, "grey.jpg"), os.path.join(root, cls, "link.jpg"))
        out["readable"].append(os.path.join(root, cls, "link.jpg"))
        os.symlink(os.path.join(root, cls), os.path.join(root, cls, "nested", "loop"))
        # Clutter: never read at all.
        write("ignored", f"{cls}/.hidden.jpg", photo())
        write("ignored", f"{cls}/.DS_Store", b"\0\0\0\1Bud1")
        write("ignored", f"{cls}/Thumbs.db", b"\xd0\xcf\x11\xe0")
        write("ignored", f"{cls}/notes.txt", b"not an image")
    # A folder that is not a class.
    write("ignored", "extras/ignored.jpg", photo())
    return out
