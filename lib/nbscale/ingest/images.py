"""A folder of images, one sub-folder per class (`pets/cat/1.png`, `pets/dog/2.jpg`, …).

Spark lists the files; each task decodes at most --batch-rows images at a time with Pillow.
Files that do not decode, or whose size differs from the first image's, are quarantined."""
from __future__ import annotations

from pathlib import Path

from ..errors import NbscaleError
from .readers import URI_RE, Read, items

PATTERN = "*.{png,PNG,jpg,JPG,jpeg,JPEG,bmp,BMP,gif,GIF}"


def read_images(spark, source: str, batch_rows: int) -> Read:
    from PIL import Image
    from pyspark.sql import functions as F

    first = items(source)[0]
    if URI_RE.match(first):
        raise NbscaleError("--format images lists its class folders on this machine: give a local path or a shared mount's path, "
                           "not a URI.")
    folder = Path(first).expanduser()
    if not folder.is_dir():
        raise NbscaleError(f"--format images needs a folder with one sub-folder per class; {str(folder)!r} is not a folder.")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.parent != folder and p.suffix.lower() in {".png", ".jpg", ".jpeg", ".bmp", ".gif"})
    if not files:
        raise NbscaleError(f"{folder} has no images in class sub-folders (e.g. {folder}/cat/1.png): check the path.")
    classes = sorted({p.parent.name for p in files})
    with Image.open(files[0]) as first:
        mode = "L" if first.mode in ("L", "1", "I;16") else "RGB"
        width, height = first.size
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

    raw = spark.read.format("binaryFile").option("recursiveFileLookup", "true").option("pathGlobFilter", PATTERN).load(str(folder))
    decoded = raw.select("path", "content").mapInPandas(
        decode, "image array<float>, label int, label_name string, path string, _bad string").cache()
    good = decoded.where(F.col("_bad").isNull()).drop("_bad")
    quarantine = decoded.where(F.col("_bad").isNotNull()).select(F.col("path").alias("source"), F.col("path").alias("raw"), F.col("_bad").alias("reason"))
    notes = [f"classes: {', '.join(f'{i}={c}' for i, c in enumerate(classes))}",
             f"batching: images decoded at most {batch_rows} at a time per task"]
    return Read(good, quarantine, len(files), [str(f) for f in files[:50]], notes, image_shape=[height, width, channels],
                cached=[decoded])
