"""Reading the text files users hand in (protocols, sample lists, predictions, indexes).

Spreadsheet programs save CSV as UTF-8 with a byte-order mark, or as UTF-16; some quote every
header; a log may hold a field longer than the csv module's 131,072-character default. All of
these are read; what cannot be read (a binary file, another encoding) is one line naming the
file and the problem, never a UnicodeDecodeError.
"""
from __future__ import annotations

import codecs
import csv
import io
import os
from pathlib import Path
from typing import Iterator

from .errors import DataError, MerbenchError

_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
         (codecs.BOM_UTF16_BE, "utf-16"))
FIELD_LIMIT = 2**31 - 1  # csv's default is 131,072 characters per field


def decode(data: bytes, where: str, error: type[MerbenchError] = DataError) -> str:
    """Bytes of a text file as str: UTF-8, or the encoding its byte-order mark names."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError as exc:
                raise error(f"{where} is not valid {encoding.upper()} text ({exc.reason} at "
                            f"byte {exc.start})", "save it again as UTF-8") from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if b"\x00" in data[:4096]:
            problem = "is a binary file (or UTF-16 text without a byte-order mark)"
        else:
            problem = f"is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        raise error(f"{where} {problem}", "save it as UTF-8 text") from exc


def read_text(path: str | os.PathLike[str], what: str = "file",
              error: type[MerbenchError] = DataError) -> str:
    """A text file's content (see :func:`decode`); a missing or unreadable file is ``error``."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise error(f"{what} {path} does not exist") from exc
    except IsADirectoryError as exc:
        raise error(f"{what} {path} is a folder, not a file") from exc
    except OSError as exc:
        raise error(f"{what} {path} cannot be read: {exc.strerror or exc}") from exc
    return decode(data, f"{what} {path}", error)


def csv_rows(text: str, where: str, error: type[MerbenchError] = DataError
             ) -> Iterator[list[str]]:
    """Rows of CSV text (quoted fields, long fields); a malformed row is ``error``."""
    if csv.field_size_limit() < FIELD_LIMIT:
        csv.field_size_limit(FIELD_LIMIT)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        yield from reader
    except csv.Error as exc:
        raise error(f"{where} line {reader.line_num}: not valid CSV ({exc})") from exc
