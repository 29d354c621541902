"""The file formats cnnkit exports to and runs, in one table: each format's suffix and the functions
that write it, run it, read the metadata ``cnnkit export`` put in it and check the options it takes
(named ``module:function``, imported when used). ``cnnkit export`` and the exported-file loader both
read this table; a new format is one more row."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnkit.core.base.errors import CnnkitError
from cnnkit.core.base.registry import resolve

META_KEY = "cnnkit"  # the metadata entry holding everything cnnkit needs to run the file


@dataclass(frozen=True)
class ExportFormat:
    """``writer(module, x, path, opset, axes, meta)`` writes the file and returns its outputs on ``x``;
    ``runner(path, device)`` opens it (``.run(array)`` gives its outputs); ``reader(path, check_weights)``
    gives its metadata; ``checker(opset)`` refuses options the format cannot take."""

    name: str
    suffix: str
    writer: str
    runner: str
    reader: str
    checker: str = ""

    def write(self, module: Any, x: Any, path: Path, opset: int, axes: dict[int, str], meta: dict[str, str]) -> Any:
        return resolve(self.writer)(module, x, path, opset, axes, meta)

    def open(self, path: Path, device: str = "cpu") -> Any:
        return resolve(self.runner)(path, device)

    def read(self, path: Path, check_weights: bool = False) -> dict[str, Any]:
        return resolve(self.reader)(path, check_weights)

    def check(self, opset: int) -> None:
        if self.checker:
            resolve(self.checker)(opset)


FORMATS = {f.name: f for f in (
    ExportFormat("onnx", ".onnx", "cnnkit.core.deploy.export:write_onnx", "cnnkit.core.deploy.onnxrun:OnnxRunner",
                 "cnnkit.core.deploy.exported:read_onnx", "cnnkit.core.deploy.export:check_opset"),
    ExportFormat("torchscript", ".torchscript", "cnnkit.core.deploy.export:write_torchscript",
                 "cnnkit.core.deploy.exported:ScriptRunner", "cnnkit.core.deploy.exported:read_torchscript"),
)}


def format_named(name: str) -> ExportFormat:
    """The format ``--format NAME`` asks for, or one line naming the ones there are."""
    if name not in FORMATS:
        raise CnnkitError(f"--format {name}: choose {' or '.join(FORMATS)}")
    return FORMATS[name]


def format_of(path: str | Path) -> ExportFormat | None:
    """The format of an exported file, by its suffix (None: not an exported file)."""
    suffix = Path(path).suffix.lower()
    return next((f for f in FORMATS.values() if f.suffix == suffix), None)
