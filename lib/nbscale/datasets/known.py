"""Built-in datasets: where they come from and their published checksums."""
from __future__ import annotations

FASHION_MNIST_BASE = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
# MD5s published with Fashion-MNIST (Zalando Research, MIT licence).
FASHION_MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
KNOWN_MD5 = {FASHION_MNIST_BASE + name: md5 for name, md5 in FASHION_MNIST_MD5.items()}


def fashion_mnist_urls(split: str = "train", base: str = FASHION_MNIST_BASE) -> list[str]:
    prefix = {"train": "train", "test": "t10k"}[split]
    return [f"{base}{prefix}-images-idx3-ubyte.gz", f"{base}{prefix}-labels-idx1-ubyte.gz"]
