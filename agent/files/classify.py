"""What a file holds, as counts: CSV/TSV/TXT/JSON, XLSX (openpyxl, read-only) and ZIP archives of those.

Only counts of customer identifiers, the file size and its SHA-256 leave this module: never a value, a line or
a cell. Reading is capped (bytes, rows, seconds, archive members); a cap that stopped the count early is named in
`caps_reached`, as is content that could not be read (`encrypted`, `unreadable`, `zip_depth`).
"""

from __future__ import annotations

import codecs
import hashlib
import io
import os
import time
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO

from agent.files.config import ClassifyConfig
from agent.files.detect import Detector
from agent.units import parse_duration, parse_size

TEXT_SUFFIXES = frozenset({".csv", ".tsv", ".txt", ".json", ".jsonl", ".ndjson", ".tab", ".psv"})
XLSX_SUFFIXES = frozenset({".xlsx", ".xlsm"})
ZIP_SUFFIXES = frozenset({".zip"})
CHUNK = 1 << 20
_CUT_AT = (b",", b"\t", b" ", b";", b'"', b"}", b"]", b">")


class _Stop(Exception):
    """A cap was reached: stop reading, keep what was counted."""


@dataclass(frozen=True, slots=True)
class Classification:
    size: int
    sha256: str | None
    counts: dict[str, int]
    caps_reached: list[str]
    classified: bool  # False when the format is not one we read


@dataclass
class _Budget:
    max_bytes: int
    max_rows: int
    deadline: float
    clock: Callable[[], float]
    bytes_read: int = 0
    rows: int = 0
    caps: list[str] = field(default_factory=list)

    def cap(self, name: str) -> None:
        if name not in self.caps:
            self.caps.append(name)

    def check_time(self) -> None:
        if self.clock() > self.deadline:
            self.cap("seconds")
            raise _Stop


class Classifier:
    def __init__(self, config: ClassifyConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.max_bytes = parse_size(config.max_bytes)
        self.hash_max_bytes = parse_size(config.hash_max_bytes)
        self.max_seconds = parse_duration(config.max_seconds)
        self.clock = clock

    def supported(self, path: str) -> bool:
        suffix = os.path.splitext(path)[1].lower()
        return suffix in TEXT_SUFFIXES or suffix in XLSX_SUFFIXES or suffix in ZIP_SUFFIXES

    def classify(self, path: str) -> Classification:
        """Counts, size and SHA-256 of the file at `path`; raises OSError when it cannot be opened."""
        size = os.stat(path).st_size
        sha = sha256_file(path) if size <= self.hash_max_bytes else None
        caps = [] if sha is not None else ["hash_bytes"]
        if not self.config.enabled or not self.supported(path):
            return Classification(size, sha, {}, caps, classified=False)
        detector = Detector(self.config.patterns)
        budget = _Budget(self.max_bytes, self.config.max_rows, self.clock() + self.max_seconds, self.clock)
        try:
            with open(path, "rb") as f:
                self._read(os.path.basename(path), f, detector, budget, depth=0)
        except _Stop:
            pass
        return Classification(size, sha, detector.counts, caps + budget.caps, classified=True)

    def _read(self, name: str, f: IO[bytes], detector: Detector, budget: _Budget, depth: int) -> None:
        suffix = os.path.splitext(name)[1].lower()
        try:
            if suffix in XLSX_SUFFIXES:
                _read_xlsx(f, detector, budget)
            elif suffix in ZIP_SUFFIXES:
                if depth > 0:
                    budget.cap("zip_depth")
                    return
                self._read_zip(f, detector, budget)
            elif suffix in TEXT_SUFFIXES:
                _read_text(f, detector, budget)
        except _Stop:
            raise
        except (zipfile.BadZipFile, zipfile.LargeZipFile, KeyError, ValueError, EOFError, OSError, TypeError,
                IndexError, AttributeError, SyntaxError, zlib.error):
            # openpyxl and zipfile raise a wide range of errors on damaged files; count what was read.
            budget.cap("unreadable")

    def _read_zip(self, f: IO[bytes], detector: Detector, budget: _Budget) -> None:
        with zipfile.ZipFile(f) as zf:
            members = [i for i in zf.infolist() if not i.is_dir()]
            if len(members) > self.config.max_members:
                budget.cap("zip_members")
                members = members[: self.config.max_members]
            for info in members:
                budget.check_time()
                suffix = os.path.splitext(info.filename)[1].lower()
                if suffix in ZIP_SUFFIXES:
                    budget.cap("zip_depth")
                    continue
                if suffix not in TEXT_SUFFIXES and suffix not in XLSX_SUFFIXES:
                    continue
                if info.flag_bits & 0x1:
                    budget.cap("encrypted")
                    continue
                if suffix in XLSX_SUFFIXES:
                    # openpyxl needs to seek: only members that fit in what is left of the byte budget.
                    if info.file_size > budget.max_bytes - budget.bytes_read:
                        budget.cap("bytes")
                        continue
                    with zf.open(info) as member:
                        data = io.BytesIO(member.read())
                    self._read(info.filename, data, detector, budget, depth=1)
                else:
                    with zf.open(info) as member:
                        self._read(info.filename, member, detector, budget, depth=1)  # type: ignore[arg-type]


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------ text


def _transcoder(head: bytes) -> Callable[[bytes, bool], bytes] | None:
    """A UTF-8 re-encoder for UTF-16/32 (BOM) and GB18030 text; None when the bytes can be scanned as they are."""
    for bom, enc in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                     (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
        if head.startswith(bom):
            break
    else:
        try:
            head.decode("utf-8")
            return None
        except UnicodeDecodeError as e:
            if e.start >= len(head) - 3:
                return None  # a character cut at the end of the sample
        enc = "gb18030"  # Chinese Excel and WPS export their CSV in GBK/GB18030
    decoder = codecs.getincrementaldecoder(enc)(errors="replace")
    return lambda data, final: decoder.decode(data, final).encode("utf-8")


def _read_text(f: IO[bytes], detector: Detector, budget: _Budget) -> None:
    carry = b""
    transcode: Callable[[bytes, bool], bytes] | None = None
    first = True
    while True:
        budget.check_time()
        want = min(CHUNK, budget.max_bytes - budget.bytes_read)
        raw = f.read(want) if want > 0 else b""
        if first:
            transcode = _transcoder(raw[:65536])
            first = False
        at_end = not raw
        if want <= 0 and f.read(1):
            budget.cap("bytes")
            at_end = True
        budget.bytes_read += len(raw)
        data = carry + (transcode(raw, at_end) if transcode else raw)
        if at_end:
            _scan_lines(data, detector, budget)
            return
        cut = data.rfind(b"\n") + 1
        if cut == 0 and len(data) > CHUNK:
            # One enormous line (minified JSON): cut where no identifier can be split.
            cut = max(data.rfind(sep) for sep in _CUT_AT) + 1 or len(data)
        body, carry = data[:cut], data[cut:]
        if body:
            _scan_lines(body, detector, budget)


def _scan_lines(data: bytes, detector: Detector, budget: _Budget) -> None:
    lines = data.count(b"\n") + (0 if not data or data.endswith(b"\n") else 1)
    left = budget.max_rows - budget.rows
    if lines > left:
        cut = 0
        for _ in range(left):
            cut = data.index(b"\n", cut) + 1
        detector.scan(data[:cut])
        budget.rows += left
        budget.cap("rows")
        raise _Stop
    detector.scan(data)
    budget.rows += lines


# ------------------------------------------------------------------------------------------------ xlsx


def _read_xlsx(f: IO[bytes], detector: Detector, budget: _Budget) -> None:
    import openpyxl  # imported on first use: it costs memory the idle agent need not pay

    with zipfile.ZipFile(f) as zf:
        # Read-only mode streams the sheets, but openpyxl loads the shared strings whole: check them first.
        shared = sum(i.file_size for i in zf.infolist() if i.filename.lower().endswith("sharedstrings.xml"))
        if shared > budget.max_bytes - budget.bytes_read:
            budget.cap("bytes")
            return
    f.seek(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # openpyxl warns about styles and extensions it does not know
        wb = openpyxl.load_workbook(f, read_only=True, data_only=True)
    try:
        for ws in wb.worksheets:
            _scan_rows(ws.iter_rows(values_only=True), detector, budget)
    finally:
        wb.close()


def _scan_rows(rows: Iterator[tuple[object, ...]], detector: Detector, budget: _Budget) -> None:
    batch: list[str] = []
    size = 0
    for row in rows:
        if budget.rows >= budget.max_rows:
            budget.cap("rows")
            break
        line = "\t".join(_cell(v) for v in row if v is not None)
        batch.append(line)
        size += len(line) + 1
        budget.rows += 1
        if budget.bytes_read + size > budget.max_bytes:
            budget.cap("bytes")
            break
        if len(batch) >= 2000:
            budget.check_time()
            _flush(batch, detector, budget, size)
            batch, size = [], 0
    if batch:
        _flush(batch, detector, budget, size)
    if budget.caps and budget.caps[-1] in ("rows", "bytes"):
        raise _Stop


def _flush(batch: list[str], detector: Detector, budget: _Budget, size: int) -> None:
    detector.scan("\n".join(batch).encode("utf-8", errors="replace"))
    budget.bytes_read += size


def _cell(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # a number typed into Excel comes back as 3.0
    return str(value)
