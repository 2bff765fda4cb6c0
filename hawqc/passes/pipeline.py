"""The textual pipeline language: `cleanup,gemm-to-matmul,fuse-bn{mode=exact}`.

Parsing yields a small tree of `PassInvocation`s; turning names into passes is the registry's job,
so the grammar stays testable on its own. Grammar:

    pipeline   := element ("," element)*
    element    := NAME options?
    options    := "{" KEY "=" VALUE ("," KEY "=" VALUE)* "}"
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from hawqc.errors import UserInputError

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_VALUE = re.compile(r"[^,{}()\s]+")


@dataclass(frozen=True)
class PassInvocation:
    name: str
    options: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        if not self.options:
            return self.name
        return f"{self.name}{{{','.join(f'{k}={v}' for k, v in self.options.items())}}}"


def parse_pipeline(text: str) -> list[PassInvocation]:
    parser = _Parser(text)
    elements = parser.pipeline()
    parser.expect_end()
    return elements


def format_pipeline(elements: list[PassInvocation]) -> str:
    return ",".join(map(str, elements))


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, what: str) -> UserInputError:
        return UserInputError(
            f"pipeline {self.text!r}: {what} at column {self.pos + 1}"
        )

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        self.skip_space()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def take(self, pattern: re.Pattern[str], what: str) -> str:
        self.skip_space()
        match = pattern.match(self.text, self.pos)
        if not match:
            raise self.error(f"expected {what}")
        self.pos = match.end()
        return match.group()

    def pipeline(self) -> list[PassInvocation]:
        elements = [self.element()]
        while self.peek() == ",":
            self.pos += 1
            elements.append(self.element())
        return elements

    def element(self) -> PassInvocation:
        name = self.take(_NAME, "a pass name")
        options: dict[str, str] = {}
        if self.peek() == "{":
            self.pos += 1
            while True:
                key = self.take(_NAME, "an option name")
                if self.peek() != "=":
                    raise self.error(f"expected '=' after option '{key}'")
                self.pos += 1
                if key in options:
                    raise self.error(f"option '{key}' given twice")
                options[key] = self.take(_VALUE, f"a value for option '{key}'")
                if self.peek() == ",":
                    self.pos += 1
                    continue
                if self.peek() != "}":
                    raise self.error("expected ',' or '}'")
                self.pos += 1
                break
        return PassInvocation(name, options)

    def expect_end(self) -> None:
        if self.peek():
            raise self.error(f"unexpected {self.peek()!r}")
