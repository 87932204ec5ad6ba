"""The recipe language: phase-retrieval schedules as data.

Grammar (case-insensitive, whitespace ignored)::

    recipe  := product
    product := power ('*' power)*
    power   := atom ('**' INT)?
    atom    := NAME ['(' key=value (',' key=value)* ')'] | '(' product ')'

Operators compose like functions, as in PyNX: in ``A * B`` the right-hand ``B`` runs first,
so ``ER**20 * HIO**80`` is 80 HIO iterations followed by 20 ER iterations.

Operators
---------
ER                     error reduction
HIO(beta=0.9)          hybrid input-output (Fienup)
RAAR(beta=0.85)        relaxed averaged alternating reflections (Luke), textbook form
DM(beta=1.0)           difference map (Elser)
AVG                    an ER iteration whose result is added to the final average
SUP(sigma=2.0, threshold=0.1)
                       shrink-wrap support update (no iteration of its own)
AD(lr=0.02)            a step of gradient descent (Adam) on the object's values inside the
                       support, on the masked amplitude chi² (automatic differentiation)
TL(lr=0.006)           a step of per-pattern unsupervised fine-tuning of the network that
                       made the prediction (cdinn invert only)
DIP(lr=0.006)          the same from a randomly initialised copy of the network: phase
                       retrieval by an untrained network (cdinn invert only)
BREAK(below=1.0)       leave the enclosing repeated group ``( ... )**N`` once every object's
                       chi² is at most ``below`` times its pattern's counting-noise floor
                       (:func:`cdinn.physics.noise.noise_floor_chi2`): it fits the data as
                       well as the true object would, so more searching cannot pay. Never
                       taken for a pattern that is not photon counts (no known floor)

``OP**N`` is N steps of OP; consecutive steps of one operator form a block that keeps its
optimiser (``AD**10``: one Adam run of 10 steps). A search that stops once it has converged,
then finishes: ``AVG**10 * ER**20 * SUP * (ER**10 * HIO**20 * SUP * BREAK)**3 * ER**10 * HIO**30``
runs HIO**30 and ER**10, then up to three times BREAK (the chi² of the last ER iteration against
the floor), SUP, HIO**20 and ER**10, then SUP, ER**20 and AVG**10.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from cdinn.errors import InputError


class RecipeError(InputError):
    """A recipe string that does not parse or names an unknown operator/parameter."""


OPERATORS: dict[str, dict[str, float]] = {
    "ER": {},
    "HIO": {"beta": 0.9},
    "RAAR": {"beta": 0.85},
    "DM": {"beta": 1.0},
    "AVG": {},
    "SUP": {"sigma": 2.0, "threshold": 0.1},
    "AD": {"lr": 0.02},
    "TL": {"lr": 0.006},
    "DIP": {"lr": 0.006},
    "BREAK": {"below": 1.0},
}
ITERATING = ("ER", "HIO", "RAAR", "DM", "AVG", "AD", "TL", "DIP")
RANGES: dict[str, tuple[float, float]] = {
    "beta": (0.0, 2.0), "sigma": (0.0, 50.0), "threshold": (0.0, 1.0), "lr": (0.0, 10.0),
    "below": (0.0, 100.0),
}
"""Open intervals a parameter must lie in; outside them an operator only destroys the object."""

DEFAULT_RECIPE = "AVG**20 * ER**60 * (SUP * ER**10 * HIO**20)**4 * (SUP * ER**20 * HIO**80)**4"
"""600 iterations, the last 20 averaged, as in the papers (CDI NN: 620, AutoPhaseNN: 600):
four long HIO blocks find the shape, four short ones between shrink-wraps refine it, ER ends.
Chosen on tuning crystals of three families (never the benchmarks'), one random start each:
relaxed atomistic gold 70 % recovered, faceted at oversampling 2.5-3.5 85 %, faceted at 2 and
1e9 photons 75 %, against 50 / 84 / 75 % for the papers' five equal blocks
``AVG**20 * ER**80 * (SUP * ER**20 * HIO**80)**5``, with a lower median chi² in each family
(``docs/design.md``). The shrink-wrap defaults (sigma 2, threshold 0.1) were chosen on
simulated faceted crystals: they gave ~10x lower chi² than sigma 1, threshold 0.2
(benchmarks/README.md)."""

MAX_STEPS = 1_000_000


@dataclass(frozen=True)
class Step:
    """One operator application with its parameters.

    ``skip``: for BREAK, how many of the following steps it skips when taken (the rest of its
    repeated group, all repetitions); set by the parser, -1 until the group is known.
    """

    name: str
    params: dict[str, float] = field(default_factory=dict)
    skip: int = 0

    def __str__(self) -> str:
        if not self.params:
            return self.name
        return f"{self.name}(" + ",".join(f"{k}={v:g}" for k, v in self.params.items()) + ")"


_TOKEN = re.compile(r"\s*(?:(\*\*)|(\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)|([A-Za-z_]\w*)|(.))")


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens: list[tuple[str, str, int]] = []
        for m in _TOKEN.finditer(text):
            if m.group(0).strip() == "":
                continue
            pos = m.start() + len(m.group(0)) - len(m.group(0).lstrip())
            if m.group(1):
                self.tokens.append(("POW", "**", pos))
            elif m.group(2):
                self.tokens.append(("NUM", m.group(2), pos))
            elif m.group(3):
                self.tokens.append(("NAME", m.group(3), pos))
            else:
                self.tokens.append(("SYM", m.group(4), pos))
        self.i = 0

    def error(self, msg: str, pos: int | None = None) -> RecipeError:
        if pos is None:
            pos = self.tokens[self.i][2] if self.i < len(self.tokens) else len(self.text)
        return RecipeError(f"recipe {self.text!r}: {msg} at column {pos + 1}")

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, kind: str, value: str | None = None) -> tuple[str, str, int]:
        tok = self.peek()
        if tok is None or tok[0] != kind or (value is not None and tok[1] != value):
            want = value or kind.lower()
            raise self.error(f"expected {want!r}" + (f", found {tok[1]!r}" if tok else ", found the end"))
        self.i += 1
        return tok

    def product(self) -> list[Step]:
        parts = [self.power()]
        while (tok := self.peek()) is not None and tok[:2] == ("SYM", "*"):
            self.i += 1
            parts.append(self.power())
        steps: list[Step] = []
        for part in reversed(parts):  # rightmost factor runs first
            steps.extend(part)
        return steps

    def power(self) -> list[Step]:
        steps = self.atom()
        if (tok := self.peek()) is not None and tok[0] == "POW":
            self.i += 1
            num = self.take("NUM")
            if not num[1].isdigit() or int(num[1]) < 1:
                raise self.error("the exponent must be a positive integer", num[2])
            n = int(num[1])
            if len(steps) * n > MAX_STEPS:
                raise self.error(f"more than {MAX_STEPS} steps", num[2])
            # A BREAK not yet in a group leaves this one: it skips the rest of its repetition
            # and every later repetition.
            steps = [replace(s, skip=len(steps) - p - 1 + (n - k - 1) * len(steps)) if s.skip < 0 else s
                     for k in range(n) for p, s in enumerate(steps)]
        return steps

    def atom(self) -> list[Step]:
        tok = self.peek()
        if tok is None:
            raise self.error("expected an operator")
        if tok[:2] == ("SYM", "("):
            self.i += 1
            steps = self.product()
            self.take("SYM", ")")
            return steps
        if tok[0] != "NAME":
            raise self.error(f"unexpected {tok[1]!r}")
        self.i += 1
        name = tok[1].upper()
        if name not in OPERATORS:
            raise self.error(f"unknown operator {tok[1]!r} (known: {', '.join(OPERATORS)})", tok[2])
        params = dict(OPERATORS[name])
        if (nxt := self.peek()) is not None and nxt[:2] == ("SYM", "("):
            self.i += 1
            while True:
                key = self.take("NAME")
                if key[1].lower() not in params:
                    known = ", ".join(params) or "none"
                    raise self.error(f"{name} has no parameter {key[1]!r} (known: {known})", key[2])
                self.take("SYM", "=")
                val = self.take("NUM")
                value, (lo, hi) = float(val[1]), RANGES[key[1].lower()]
                if not lo < value < hi:
                    raise self.error(f"{name}({key[1]}={val[1]}) must lie between {lo:g} and {hi:g}", val[2])
                params[key[1].lower()] = value
                if (sep := self.peek()) is not None and sep[:2] == ("SYM", ","):
                    self.i += 1
                    continue
                break
            self.take("SYM", ")")
        return [Step(name, params, skip=-1 if name == "BREAK" else 0)]


def parse_recipe(text: str) -> list[Step]:
    """Parse a recipe into the list of steps in execution order.

    Raises
    ------
    RecipeError
        With the column of the problem, for any syntax error, unknown operator or parameter.
    """
    if not text or not text.strip():
        raise RecipeError("empty recipe")
    parser = _Parser(text)
    steps = parser.product()
    if parser.peek() is not None:
        raise parser.error(f"unexpected {parser.peek()[1]!r}")  # type: ignore[index]
    if any(s.skip < 0 for s in steps):
        raise RecipeError(f"recipe {text!r}: BREAK leaves a repeated group, so it must sit inside one, "
                          "e.g. '(ER**10 * HIO**20 * SUP * BREAK)**3'")
    if not any(s.name in ITERATING for s in steps):
        raise RecipeError(f"recipe {text!r} has no iterating operator ({', '.join(ITERATING)})")
    return steps
