"""prequential: lossless compression by learning the data online (Rae's transmission scheme).

>>> import prequential
>>> blob = prequential.compress(b"hello hello hello", "tiny")
>>> prequential.decompress(blob)
b'hello hello hello'
"""

from prequential.api import compress, decode, decompress, encode
from prequential.config import PRESETS, Config
from prequential.errors import PrequentialError

__all__ = ["PRESETS", "Config", "PrequentialError", "compress", "decode", "decompress", "encode"]
