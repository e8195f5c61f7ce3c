"""Forbidden combinations of knob values: a catalogue's `forbidden` entries.

An entry names equalities (`if: {dtype: float32, attn_implementation: flash_attention_2}`), an
expression over knobs and platform or model facts (`expr: "max_num_batched_tokens <
max_num_seqs"`), or both; the combination is forbidden where all of it holds. Expressions use
names, numbers, `true`/`false`, comparisons, `+ - * / %`, `and`, `or` and `not`, and are
evaluated here without `eval`. Rules ConfigSpace can state become forbidden clauses, so the
optimizer never proposes them; the rest are checked on each proposal.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tuner.fmt import fmt_value as _fmt

Value = bool | int | float | str

_COMPARE = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
_ARITH = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Mod: operator.mod,
}
_CONSTANTS = {"true": True, "false": False}


class Unknown(Exception):
    """An expression names something without a value here (an unset knob)."""


def parse(text: str) -> ast.expr:
    """Parses and checks an expression; raises ValueError for anything outside the language."""
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError as exc:
        raise ValueError(f"cannot parse {text!r}: {exc.msg}") from None
    for node in ast.walk(tree):
        allowed = (
            ast.BoolOp,
            ast.And,
            ast.Or,
            ast.UnaryOp,
            ast.Not,
            ast.USub,
            ast.Compare,
            ast.BinOp,
            ast.Name,
            ast.Load,
            ast.Constant,
            *_COMPARE,
            *_ARITH,
        )
        if not isinstance(node, allowed):
            raise ValueError(f"{text!r}: {type(node).__name__} is not allowed in a rule")
        if isinstance(node, ast.Constant) and not isinstance(node.value, bool | int | float | str):
            raise ValueError(f"{text!r}: constant {node.value!r} is not allowed")
    return tree


def names(tree: ast.expr) -> set[str]:
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} - set(_CONSTANTS)


def evaluate(tree: ast.expr, values: Mapping[str, Any]) -> Any:
    """Value of an expression; `Unknown` when it needs a name `values` lacks."""
    if isinstance(tree, ast.Constant):
        return tree.value
    if isinstance(tree, ast.Name):
        if tree.id in _CONSTANTS:
            return _CONSTANTS[tree.id]
        if tree.id not in values:
            raise Unknown(tree.id)
        return values[tree.id]
    if isinstance(tree, ast.BoolOp):
        results = [evaluate(v, values) for v in tree.values]
        return all(results) if isinstance(tree.op, ast.And) else any(results)
    if isinstance(tree, ast.UnaryOp):
        operand = evaluate(tree.operand, values)
        return (not operand) if isinstance(tree.op, ast.Not) else -operand
    if isinstance(tree, ast.BinOp):
        return _ARITH[type(tree.op)](evaluate(tree.left, values), evaluate(tree.right, values))
    if isinstance(tree, ast.Compare):
        left = evaluate(tree.left, values)
        for op, right_node in zip(tree.ops, tree.comparators, strict=True):
            right = evaluate(right_node, values)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    raise ValueError(f"cannot evaluate {ast.dump(tree)}")


@dataclass(frozen=True)
class Rule:
    """A forbidden combination on one platform: equalities on searched knobs, and an
    expression whose fixed knobs and facts are already bound."""

    values: tuple[tuple[str, tuple[Value, ...]], ...]
    because: str
    expr: ast.expr | None = None
    text: str = ""
    bound: tuple[tuple[str, Any], ...] = ()

    def matches(self, knobs: Mapping[str, Value]) -> bool:
        """Whether `knobs` fall in the forbidden combination (False where a knob is unset)."""
        if not all(name in knobs and knobs[name] in allowed for name, allowed in self.values):
            return False
        if self.expr is None:
            return True
        try:
            return bool(evaluate(self.expr, {**dict(self.bound), **knobs}))
        except Unknown:
            return False

    def describe(self, knobs: Mapping[str, Value]) -> str:
        """The offending values, for an error message."""
        named = [n for n, _ in self.values]
        if self.expr is not None:
            named += sorted(names(self.expr) & set(knobs))
        return " ".join(f"{n}={_fmt(knobs[n])}" for n in named if n in knobs)

    def clause(self, params: Mapping[str, Any]) -> Any | None:
        """The ConfigSpace forbidden clause stating this rule, or None if it cannot."""
        from ConfigSpace import ForbiddenAndConjunction, ForbiddenEqualsClause, ForbiddenInClause

        clauses = [
            ForbiddenEqualsClause(params[n], a[0])
            if len(a) == 1
            else ForbiddenInClause(params[n], list(a))
            for n, a in self.values
        ]
        if self.expr is not None:
            terms = _conjuncts(self.expr)
            for term in terms:
                encoded = _encode(term, params)
                if encoded is None:
                    return None
                clauses.append(encoded)
        if not clauses:
            return None
        return clauses[0] if len(clauses) == 1 else ForbiddenAndConjunction(*clauses)


def simplify(tree: ast.expr, bound: Mapping[str, Any], searched: set[str]) -> ast.expr | bool:
    """Decides the conjuncts that name no searched knob: False if one of them fails (the rule
    never applies), True if all of them hold and nothing is left, else what is left."""
    left = []
    for term in _conjuncts(tree):
        if names(term) & searched:
            left.append(term)
        elif not evaluate(term, bound):
            return False
    if not left:
        return True
    return left[0] if len(left) == 1 else ast.BoolOp(op=ast.And(), values=left)


def _conjuncts(tree: ast.expr) -> list[ast.expr]:
    if isinstance(tree, ast.BoolOp) and isinstance(tree.op, ast.And):
        return [t for v in tree.values for t in _conjuncts(v)]
    return [tree]


def _encode(term: ast.expr, params: Mapping[str, Any]) -> Any | None:
    from ConfigSpace import (
        ForbiddenEqualsClause,
        ForbiddenEqualsRelation,
        ForbiddenGreaterThanRelation,
        ForbiddenLessThanRelation,
    )

    if isinstance(term, ast.Name) and term.id in params:
        return ForbiddenEqualsClause(params[term.id], True)
    if (
        isinstance(term, ast.UnaryOp)
        and isinstance(term.op, ast.Not)
        and isinstance(term.operand, ast.Name)
        and term.operand.id in params
    ):
        return ForbiddenEqualsClause(params[term.operand.id], False)
    if not (isinstance(term, ast.Compare) and len(term.ops) == 1):
        return None
    left, right, op = term.left, term.comparators[0], term.ops[0]
    if isinstance(left, ast.Name) and left.id in params:
        if isinstance(right, ast.Constant) and isinstance(op, ast.Eq):
            return ForbiddenEqualsClause(params[left.id], right.value)
        if isinstance(right, ast.Name) and right.id in params:
            relations: dict[type[ast.cmpop], Callable[[Any, Any], object]] = {
                ast.Lt: ForbiddenLessThanRelation,
                ast.Gt: ForbiddenGreaterThanRelation,
                ast.Eq: ForbiddenEqualsRelation,
            }
            relation = relations.get(type(op))
            if relation is not None:
                return relation(params[left.id], params[right.id])
    return None
