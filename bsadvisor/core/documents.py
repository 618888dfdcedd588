"""The one base of bsadvisor's typed documents: advice (core/predict.py), a training run's records and
noise points (runtime/documents.py), the validation (runtime/validation.py).

A document is a frozen dataclass read by attribute (``advice.b0``, ``record.train_loss``);
``to_dict()`` is its JSON only: its fields in declaration order, a nested document as its own
``to_dict()``, tuples as lists, with the keys and order the files and ``--json`` always had;
``from_dict`` reads it back (a field the JSON lacks takes its default, else None, so older files
load). A document is also a read-only Mapping of its JSON (``point["b_simple"]``, ``.items()``),
for code written against the dicts these documents replaced.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, Iterator, TypeVar

D = TypeVar("D", bound="Document")


def plain(value: Any) -> Any:
    """``value`` as JSON data: a document's ``to_dict()``, tuples as lists, dicts and lists copied."""
    if dataclasses.is_dataclass(value):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    return value


class Document(Mapping):
    """A frozen, typed document (module docstring); subclasses are ``@dataclass(frozen=True)``.

    What a subclass leaves out of its JSON, by field name: ``_not_in_json`` always (what is not part
    of the document), ``_omit_if_none`` while None (what only some versions of a file hold),
    ``_omit_if_false`` while false (a flag written only when set).
    """

    _not_in_json: ClassVar[tuple[str, ...]] = ()
    _omit_if_none: ClassVar[tuple[str, ...]] = ()
    _omit_if_false: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict:
        """The JSON of the document (module docstring)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if (f.name in self._not_in_json or (f.name in self._omit_if_none and value is None)
                    or (f.name in self._omit_if_false and not value)):
                continue
            out[f.name] = plain(value)
        return out

    @classmethod
    def from_dict(cls: type[D], doc: Mapping, **converted: Any) -> D:
        """The document of ``doc`` (a ``to_dict()``, read back from a file or a checkpoint): each field from
        its key (lists as tuples; ``converted[name]`` instead where given, e.g. a nested document), its
        default or None where ``doc`` lacks it."""
        kw = {}
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            if f.name in converted:
                kw[f.name] = converted[f.name]
            elif f.name in doc:
                v = doc[f.name]
                kw[f.name] = tuple(v) if isinstance(v, list) else v
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                kw[f.name] = None
        return cls(**kw)

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())
