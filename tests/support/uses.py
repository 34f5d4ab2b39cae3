"""What a test really passes to a run: the strings and ``slo(...)`` keywords its code gives pytest or the plugin.

Read with :mod:`ast`, never run. A string literal is a use only where the code passes it on to something that
runs pytest or the plugin: an argument of a call named in :data:`RUNNERS` (``pytester.runpytest``, a subprocess's
argument list, a file the test writes such as ``makepyfile`` or ``makeini``, the marker ``slo(...)``), directly
or through what carries it there:

- a name assigned it (a local, or a module-level constant such as a template), when that name is passed on;
- a helper function of the module (or of a suite module it imports from, such as ``helpers``) given it as an argument (or as a parameter's default), when the helper passes
  that parameter on, or returns it to a caller that does;
- a value of the test's own ``parametrize``, column by column: the column the test passes on counts, the column
  of expected messages does not;
- a call that builds the value passed (``TEMPLATE.format(...)``, ``" ".join(...)``, an f-string).

Never a use: a literal in an ``assert`` statement (its test or its message), one compared (``==``, ``in``),
one given to a call that reads output (:data:`MATCHERS`: ``fnmatch_lines``, ``re.search``, ``startswith``, a
``match=`` pattern), a ``raise``'s message, a docstring or a comment.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["MATCHERS", "RUNNERS", "Uses"]

#: Calls whose arguments reach a pytest or plugin run: pytester's and subprocess's, the files a test writes, the marker.
RUNNERS = frozenset(
    {
        "runpytest",
        "runpytest_subprocess",
        "runpytest_inprocess",
        "inline_run",
        "runpython",
        "runpython_c",
        "spawn_pytest",
        "main",  # pytest.main
        "run",  # subprocess.run, pytester.run
        "Popen",
        "call",
        "check_call",
        "check_output",
        "makepyfile",
        "makeconftest",
        "makeini",
        "makepyprojecttoml",
        "maketxtfile",
        "makefile",
        "write_text",
        "setenv",  # monkeypatch.setenv("PYTEST_ADDOPTS", ...)
        "slo",
    }
)

#: Calls that read output: what is given to them is an expectation, never a use.
MATCHERS = frozenset(
    {
        "fnmatch_lines",
        "fnmatch_lines_random",
        "no_fnmatch_line",
        "re_match_lines",
        "re_match_lines_random",
        "no_re_match_line",
        "assert_outcomes",
        "match",
        "search",
        "fullmatch",
        "findall",
        "finditer",
        "startswith",
        "endswith",
        "count",
        "find",
        "rfind",
        "index",
        "split",
        "rsplit",
        "partition",
        "rpartition",
        "removeprefix",
        "removesuffix",
        "raises",
        "warns",
        "fail",
        "skip",
        "xfail",
        "print",
    }
)

Binding = tuple[ast.expr, "Scope"]

SUPPORT = Path(__file__).resolve().parent  # the suite's shared modules, imported by bare name


@dataclass(eq=False)
class Scope:
    """The names a function (or the module) binds: each to the expressions, in their own scopes, it may hold."""

    parent: Scope | None = None
    names: dict[str, list[Binding]] = field(default_factory=dict)
    functions: dict[str, tuple[ast.FunctionDef | ast.AsyncFunctionDef, Scope]] = field(default_factory=dict)

    def bind(self, name: str, expr: ast.expr, where: Scope) -> None:
        self.names.setdefault(name, []).append((expr, where))

    def lookup(self, name: str) -> list[Binding]:
        scope: Scope | None = self
        while scope is not None:
            if name in scope.names or name in scope.functions:
                return scope.names.get(name, [])
            scope = scope.parent
        return []

    def function(self, name: str) -> tuple[ast.FunctionDef | ast.AsyncFunctionDef, Scope] | None:
        scope: Scope | None = self
        while scope is not None:
            if name in scope.functions:
                return scope.functions[name]
            if name in scope.names:
                return None
            scope = scope.parent
        return None


def _call_name(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def _stored(target: ast.expr) -> list[str]:
    return [n.id for n in ast.walk(target) if isinstance(n, ast.Name)]


def _local_bindings(body: list[ast.stmt], scope: Scope) -> None:
    """Bind in *scope* every name *body* assigns (not inside nested functions or classes), and its nested functions."""
    todo: list[ast.AST] = list(body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            scope.functions[node.name] = (node, scope)
            continue
        if isinstance(node, ast.ClassDef | ast.Lambda):
            continue
        if isinstance(node, ast.Assign):
            for target in node.targets:
                for name in _stored(target):
                    scope.bind(name, node.value, scope)
        elif isinstance(node, ast.AnnAssign | ast.AugAssign) and node.value is not None:
            for name in _stored(node.target):
                scope.bind(name, node.value, scope)
        elif isinstance(node, ast.For | ast.AsyncFor | ast.comprehension):
            for name in _stored(node.target):
                scope.bind(name, node.iter, scope)
        elif isinstance(node, ast.withitem) and node.optional_vars is not None:
            for name in _stored(node.optional_vars):
                scope.bind(name, node.context_expr, scope)
        elif isinstance(node, ast.NamedExpr):
            scope.bind(node.target.id, node.value, scope)
        todo.extend(ast.iter_child_nodes(node))


class Uses:
    """The strings and ``slo(...)`` keywords test *function* of *path* passes to a run (see the module's docstring)."""

    def __init__(self, path: Path, function: str) -> None:
        tree = ast.parse(path.read_text())
        self._scopes: list[Scope] = []  # kept alive: the seen keys hold their ids
        self.module = Scope()
        _local_bindings(tree.body, self.module)
        self._imports(tree, path.parent)
        entry = self.module.functions.get(function)
        self.found = entry is not None and isinstance(entry[0], ast.FunctionDef)
        self.strings: list[str] = []
        self.slo_keywords: set[str] = set()
        self._seen: set[tuple[int, bool, int]] = set()
        self._helpers: set[tuple[object, ...]] = set()
        self._walking: set[int] = set()  # the helpers being read now (a recursive one is read once)
        if entry is None:
            return
        test = entry[0]
        scope = Scope(parent=self.module)
        self._scopes.append(scope)
        for decorator in test.decorator_list:
            self._expr(decorator, self.module, False)
            if isinstance(decorator, ast.Call) and _call_name(decorator) == "parametrize":
                self._parametrize(decorator, scope)
        _local_bindings(test.body, scope)
        for stmt in test.body:
            self._stmt(stmt, scope, False)

    def option(self, flag: str) -> bool:
        """*flag* (``--rollout-x``, or an ini name) is in a string the code passes to a run."""
        return any(re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text) for text in self.strings)

    def argument(self, key: str) -> bool:
        """*key* is given to ``slo(...)``: as a keyword, or as ``key=`` in test code a string passed to a run holds."""
        return key in self.slo_keywords or any(re.search(rf"(?<![\w.]){key}\s*=", text) for text in self.strings)

    # -- reading the code ----------------------------------------------------------------------------------------

    def _imports(self, tree: ast.Module, here: Path) -> None:
        """Bind what the module imports from a module of the suite's own (``from helpers import run_slo_test``):
        its helpers pass on what they are given as the module's own do."""
        for node in tree.body:
            if not isinstance(node, ast.ImportFrom) or node.level or node.module is None:
                continue
            source = next(
                (d / f"{node.module}.py" for d in (here, SUPPORT) if (d / f"{node.module}.py").is_file()), None
            )
            if source is None:
                continue
            other = Scope()
            self._scopes.append(other)
            _local_bindings(ast.parse(source.read_text()).body, other)
            for alias in node.names:
                name = alias.asname or alias.name
                if alias.name in other.functions:
                    self.module.functions[name] = other.functions[alias.name]
                elif alias.name in other.names:
                    self.module.names[name] = other.names[alias.name]

    def _parametrize(self, call: ast.Call, scope: Scope) -> None:
        """Bind each of the test's parametrized names to its own column of the values."""
        given = {k.arg: k.value for k in call.keywords if k.arg}
        names_node = call.args[0] if call.args else given.get("argnames")
        values = call.args[1] if len(call.args) > 1 else given.get("argvalues")
        if names_node is None or values is None:
            return
        if isinstance(names_node, ast.Constant) and isinstance(names_node.value, str):
            names = [n.strip() for n in names_node.value.split(",") if n.strip()]
        elif isinstance(names_node, ast.Tuple | ast.List):
            names = [e.value for e in names_node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
        else:
            return
        where = scope.parent or scope
        if isinstance(values, ast.Name):
            resolved = self.module.lookup(values.id)
            values = resolved[0][0] if len(resolved) == 1 else values
        if not isinstance(values, ast.List | ast.Tuple):
            for name in names:  # values built some other way: every column may be any of them
                scope.bind(name, values, where)
            return
        for row in values.elts:
            if isinstance(row, ast.Call) and _call_name(row) == "param":
                cells = list(row.args)
            elif isinstance(row, ast.Tuple | ast.List) and len(names) > 1:
                cells = list(row.elts)
            else:
                cells = [row]
            for name, cell in zip(names, cells, strict=False):
                scope.bind(name, cell, where)

    def _stmt(self, stmt: ast.stmt, scope: Scope, returns_live: bool) -> None:
        if isinstance(stmt, ast.Return):
            if stmt.value is not None:
                self._expr(stmt.value, scope, returns_live)
        elif isinstance(stmt, ast.Expr):
            self._expr(stmt.value, scope, False)  # a bare call runs; a docstring is no use
        elif isinstance(stmt, ast.Assign | ast.AnnAssign | ast.AugAssign):
            if stmt.value is not None:
                self._expr(stmt.value, scope, False)  # its calls run; it is passed on only where its name is
        elif isinstance(
            stmt,
            ast.Assert
            | ast.Raise
            | ast.Import
            | ast.ImportFrom
            | ast.FunctionDef
            | ast.AsyncFunctionDef
            | ast.ClassDef,
        ):
            return  # an assertion or an error message is an expectation; a nested def runs only when called
        else:  # if, for, while, with, try, match: their tests and iterables are read, their bodies run
            for child in ast.iter_child_nodes(stmt):
                if isinstance(child, ast.stmt):
                    self._stmt(child, scope, returns_live)
                elif isinstance(child, ast.expr):
                    self._expr(child, scope, False)
                else:
                    for grandchild in ast.iter_child_nodes(child):  # withitem, excepthandler, match_case
                        if isinstance(grandchild, ast.stmt):
                            self._stmt(grandchild, scope, returns_live)
                        elif isinstance(grandchild, ast.expr):
                            self._expr(grandchild, scope, False)

    def _expr(self, node: ast.expr, scope: Scope, live: bool) -> None:
        """Read *node*; *live*: its value is passed to a run."""
        key = (id(node), live, id(scope))
        if key in self._seen:
            return
        self._seen.add(key)
        if isinstance(node, ast.Constant):
            if live and isinstance(node.value, str):
                self.strings.append(node.value)
        elif isinstance(node, ast.Name):
            if live:
                for expr, where in scope.lookup(node.id):
                    self._expr(expr, where, True)
        elif isinstance(node, ast.Call):
            self._call(node, scope, live)
        elif isinstance(node, ast.Compare):
            for operand in (node.left, *node.comparators):
                self._expr(operand, scope, False)
        elif isinstance(node, ast.IfExp):
            self._expr(node.test, scope, False)
            self._expr(node.body, scope, live)
            self._expr(node.orelse, scope, live)
        elif isinstance(node, ast.Subscript):
            self._expr(node.value, scope, live)
            self._expr(node.slice, scope, False)
        elif isinstance(node, ast.Lambda):
            return
        elif isinstance(node, ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp):
            for generator in node.generators:
                self._expr(generator.iter, scope, False)  # passed on through the loop's names, if they are
                for condition in generator.ifs:
                    self._expr(condition, scope, False)
            elts = [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
            for elt in elts:
                self._expr(elt, scope, live)
        else:  # f-strings, +, tuples, lists, dicts, *args, attributes: their parts are passed on with them
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.expr):
                    self._expr(child, scope, live)

    def _call(self, call: ast.Call, scope: Scope, live: bool) -> None:
        name = _call_name(call)
        if name == "slo":
            self.slo_keywords |= {k.arg for k in call.keywords if k.arg is not None}
        helper = scope.function(name) if isinstance(call.func, ast.Name) else None
        if helper is not None:
            for arg in [*call.args, *(k.value for k in call.keywords)]:
                self._expr(arg, scope, False)  # the calls in its arguments run
            self._helper(helper, call, scope, live)
            return
        runs = name in RUNNERS
        passed = name not in MATCHERS and (runs or live)
        # a call that builds the value passed on (TEMPLATE.format(...), " ".join(...)) passes on what it is called on
        self._expr(call.func, scope, passed and not runs)
        for arg in call.args:
            self._expr(arg, scope, passed)
        for keyword in call.keywords:
            self._expr(keyword.value, scope, passed and keyword.arg != "match")

    def _helper(
        self, helper: tuple[ast.FunctionDef | ast.AsyncFunctionDef, Scope], call: ast.Call, caller: Scope, live: bool
    ) -> None:
        """Read a helper function of the module as called here: its parameters bound to this call's arguments."""
        fn, where = helper
        params = fn.args
        positional = [p.arg for p in (*params.posonlyargs, *params.args)]
        bound: dict[str, list[Binding]] = {}
        for i, arg in enumerate(call.args):
            if isinstance(arg, ast.Starred):
                targets = positional[i:] + ([params.vararg.arg] if params.vararg else [])
            elif i < len(positional):
                targets = [positional[i]]
            else:
                targets = [params.vararg.arg] if params.vararg else []
            for target in targets:
                bound.setdefault(target, []).append((arg, caller))
        keyword_names = {*positional, *(p.arg for p in params.kwonlyargs)}
        for keyword in call.keywords:
            if keyword.arg in keyword_names:
                bound.setdefault(keyword.arg, []).append((keyword.value, caller))
            elif params.kwarg is not None:
                bound.setdefault(params.kwarg.arg, []).append((keyword.value, caller))
        defaults = list(zip(positional[len(positional) - len(params.defaults) :], params.defaults, strict=True))
        defaults += [(p.arg, d) for p, d in zip(params.kwonlyargs, params.kw_defaults, strict=True) if d is not None]
        for param, default in defaults:
            if param not in bound:
                bound[param] = [(default, where)]
        key = (id(fn), live, frozenset((p, id(e), id(s)) for p, items in bound.items() for e, s in items))
        if key in self._helpers or id(fn) in self._walking:  # walked already, or a recursive call: read once
            return
        self._helpers.add(key)
        inner = Scope(parent=where)
        self._scopes.append(inner)
        for param in (*positional, *(p.arg for p in params.kwonlyargs), params.vararg, params.kwarg):
            if param is not None:
                inner.names[param if isinstance(param, str) else param.arg] = []
        for param, items in bound.items():
            inner.names[param] = list(items)
        _local_bindings(fn.body, inner)
        self._walking.add(id(fn))
        try:
            for stmt in fn.body:
                self._stmt(stmt, inner, live)
        finally:
            self._walking.discard(id(fn))
