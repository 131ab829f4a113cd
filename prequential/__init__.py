"""prequential: lossless compression by learning the data online (Rae's transmission scheme).

>>> import prequential
>>> blob = prequential.compress(b"hello hello hello", "tiny")
>>> prequential.decompress(blob)
b'hello hello hello'
"""

from prequential.api import compress, decode, decompress, encode
from prequential.config import PRESETS, Config
from prequential.errors import PrequentialError
from prequential.measure import MeasureResult, measure

__all__ = ["PRESETS", "Config", "MeasureResult", "PrequentialError", "compress", "decode", "decompress", "encode", "measure"]
