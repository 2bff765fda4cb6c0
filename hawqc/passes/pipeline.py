"""The textual pipeline language: `cleanup,fixpoint(fold-constants,dce){max-iters=8},gemm-to-matmul`.

Parsing yields a small tree, `PassInvocation`s and `GroupInvocation`s; turning names into passes is
the manager's job, so the grammar stays testable on its own, and a parsed pipeline prints back to
the same text (whitespace aside). Grammar:

    pipeline := element ("," element)*
    element  := NAME options?                     a pass, or a named pipeline
              | GROUP "(" pipeline ")" options?   a group, e.g. fixpoint(...){max-iters=8}
    options  := "{" KEY "=" VALUE ("," KEY "=" VALUE)* "}"
    VALUE    := no comma, brace, parenthesis or space, except inside one "<...>" (fixed<16,6>)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from hawqc.errors import UserInputError

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
# A value may hold one `<...>` with commas in it: a fixed-point type, `type=fixed<16,6,TRN,WRAP>`.
_VALUE = re.compile(r"(?:<[^<>{}()\s]*>|[^,{}()\s])+")

# Group kinds and the options each takes (with defaults); a group's body is a pipeline.
GROUP_OPTIONS: dict[str, dict[str, int]] = {"fixpoint": {"max-iters": 8}}


@dataclass(frozen=True)
class PassInvocation:
    name: str
    options: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.name + _format_options(self.options)


@dataclass(frozen=True)
class GroupInvocation:
    kind: str
    body: list[PassInvocation | GroupInvocation]
    options: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.kind}({format_pipeline(self.body)}){_format_options(self.options)}"


Element = PassInvocation | GroupInvocation


def parse_pipeline(text: str) -> list[Element]:
    parser = _Parser(text)
    elements = parser.pipeline()
    parser.expect_end()
    return elements


def format_pipeline(elements: list[Element]) -> str:
    return ",".join(map(str, elements))


def _format_options(options: dict[str, str]) -> str:
    if not options:
        return ""
    return "{" + ",".join(f"{key}={value}" for key, value in options.items()) + "}"


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, what: str) -> UserInputError:
        return UserInputError(f"pipeline {self.text!r}: {what} at column {self.pos + 1}")

    def peek(self) -> str:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def take(self, pattern: re.Pattern[str], what: str) -> str:
        self.peek()
        match = pattern.match(self.text, self.pos)
        if not match:
            raise self.error(f"expected {what}")
        self.pos = match.end()
        return match.group()

    def pipeline(self) -> list[Element]:
        elements = [self.element()]
        while self.peek() == ",":
            self.pos += 1
            elements.append(self.element())
        return elements

    def element(self) -> Element:
        name = self.take(_NAME, "a pass name")
        if self.peek() != "(":
            return PassInvocation(name, self.options())
        if name not in GROUP_OPTIONS:
            raise self.error(f"unknown group '{name}' (groups: {', '.join(sorted(GROUP_OPTIONS))})")
        self.pos += 1
        body = self.pipeline()
        if self.peek() != ")":
            raise self.error(f"expected ')' to close '{name}('")
        self.pos += 1
        options = self.options()
        allowed = GROUP_OPTIONS[name]
        for key, value in options.items():
            if key not in allowed:
                raise self.error(f"group '{name}' has no option '{key}' (options: {', '.join(allowed)})")
            if not value.isdigit() or int(value) < 1:
                raise self.error(f"option '{key}' of '{name}' must be a positive integer, got {value!r}")
        return GroupInvocation(name, body, options)

    def options(self) -> dict[str, str]:
        options: dict[str, str] = {}
        if self.peek() != "{":
            return options
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
            return options

    def expect_end(self) -> None:
        if self.peek():
            raise self.error(f"unexpected {self.peek()!r}")
