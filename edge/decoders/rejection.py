"""A decoder's verdict on input it could not use: a reason (a short counter key) and a detail for
the log. Shared by every decoder so rejections count and print the same way."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Rejection:
    #: A counter key; decoders pass their own StrEnum members (which are str).
    reason: str
    detail: str

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"
