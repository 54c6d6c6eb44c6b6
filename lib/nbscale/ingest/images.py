"""A folder of images, one sub-folder per class (`pets/cat/1.png`, `pets/dog/2.jpg`, …).

Spark lists the files; each task decodes at most --batch-rows images at a time with Pillow.
Files that do not decode (empty, truncated, not an image), or whose size differs from the first image
that decodes, are quarantined with the reason. macOS metadata files beside the images (`._x.png`,
AppleDouble, not images) are skipped and counted on the card."""
from __future__ import annotations

from pathlib import Path

from ..errors import NbscaleError
from .readers import URI_RE, Read, items

PATTERN = "*.{png,PNG,jpg,JPG,jpeg,JPEG,bmp,BMP,gif,GIF}"
SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif"}
REFERENCE_TRIES = 100  # images tried for the dataset's size and mode before refusing the folder


def _reference(files: list[Path]) -> tuple[str, int, int]:
    """Mode and size of the first image that decodes: the size every other image must have."""
    from PIL import Image

    failures = []
    for path in files[:REFERENCE_TRIES]:
        try:
            with Image.open(path) as image:
                image.load()
                return ("L" if image.mode in ("L", "1", "I;16") else "RGB"), image.size[0], image.size[1]
        except Exception as exc:  # noqa: BLE001 - any decoder error: try the next file
            failures.append(f"{path.name} ({type(exc).__name__})")
    raise NbscaleError(f"None of the first {len(failures)} images decodes ({', '.join(failures[:3])}): check that the folder holds "
                       "PNG/JPEG/BMP/GIF images.")


def read_images(spark, source: str, batch_rows: int) -> Read:
    from pyspark.sql import functions as F

    first = items(source)[0]
    if URI_RE.match(first):
        raise NbscaleError("--format images lists its class folders on this machine: give a local path or a shared mount's path, "
                           "not a URI.")
    folder = Path(first).expanduser()
    if not folder.is_dir():
        raise NbscaleError(f"--format images needs a folder with one sub-folder per class; {str(folder)!r} is not a folder.")
    listed = sorted(p for p in folder.rglob("*") if p.is_file() and p.parent != folder and p.suffix.lower() in SUFFIXES)
    apple = [p for p in listed if p.name.startswith("._")]
    files = [p for p in listed if not p.name.startswith("._")]
    if not files:
        raise NbscaleError(f"{folder} has no images in class sub-folders (e.g. {folder}/cat/1.png): check the path.")
    classes = sorted({p.parent.name for p in files})
    # Spark's file scan skips 0-byte files: they are quarantined here, or the counts would not add up.
    sizes = {p: p.stat().st_size for p in files}
    empty = [p for p in files if sizes[p] == 0]
    mode, width, height = _reference([p for p in files if sizes[p] > 0])
    channels = 1 if mode == "L" else 3

    def decode(batches):
        import io

        import numpy as np
        import pandas as pd
        from PIL import Image

        for batch in batches:
            out = {"image": [], "label": [], "label_name": [], "path": [], "_bad": []}
            for path, content in zip(batch["path"], batch["content"]):
                name = path.rstrip("/").split("/")[-2]
                image, bad = None, None
                try:
                    with Image.open(io.BytesIO(content)) as img:
                        img = img.convert(mode)
                        if img.size != (width, height):
                            bad = f"image is {img.size[0]}x{img.size[1]}, the dataset is {width}x{height}"
                        else:
                            image = np.asarray(img, dtype=np.float32).ravel()
                except Exception as exc:  # noqa: BLE001 - any decoder error quarantines the file
                    bad = f"not a readable image ({type(exc).__name__})"
                out["image"].append(image)
                out["label"].append(classes.index(name))
                out["label_name"].append(name)
                out["path"].append(path)
                out["_bad"].append(bad)
            yield pd.DataFrame(out)

    raw = (spark.read.format("binaryFile").option("recursiveFileLookup", "true").option("pathGlobFilter", PATTERN).load(str(folder))
           .where(~F.col("path").rlike(r"/\._[^/]*$")))
    decoded = raw.select("path", "content").mapInPandas(
        decode, "image array<float>, label int, label_name string, path string, _bad string").cache()
    good = decoded.where(F.col("_bad").isNull()).drop("_bad")
    quarantine = decoded.where(F.col("_bad").isNotNull()).select(F.col("path").alias("source"), F.col("path").alias("raw"), F.col("_bad").alias("reason"))
    if empty:
        quarantine = quarantine.unionByName(spark.createDataFrame(
            [(f"file:{p}", f"file:{p}", "empty file (0 bytes)") for p in empty], "source string, raw string, reason string"))
    notes = [f"classes: {', '.join(f'{i}={c}' for i, c in enumerate(classes))}",
             f"batching: images decoded at most {batch_rows} at a time per task"]
    if apple:
        notes.append(f"skipped {len(apple)} macOS metadata file(s) (._*, e.g. {apple[0].relative_to(folder)}): not images")
    return Read(good, quarantine, len(files), [str(f) for f in files[:50]], notes, image_shape=[height, width, channels],
                cached=[decoded])
