"""Which params.yaml key paths library code reads: a small static type inference over src/.

A key path such as ``data.http.retries`` counts as read when code accesses each of its segments
as an attribute on a value of the right config type: ``params.data`` on a ``Params``,
``.http`` on a ``DataParams``, ``.retries`` on an ``HttpParams``, in one chain
(``params.data.http.retries``) or across functions (``fetch(..., data.http)`` and
``http.retries`` inside ``fetch(http: HttpParams)``). Types come from annotations (function
parameters and returns, class fields, properties), from assignments (``cfg = params.train``,
``self.cfg = cfg``), from ``Model(...)`` / ``Model.model_validate(...)``, and from loops and
subscripts over homogeneous containers. An access whose receiver type is unknown counts for
nothing, so a use the inference cannot see shows up as an unread key, never the reverse.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel


@dataclass(frozen=True)
class Seq:
    """A homogeneous container (list, tuple, dict values): iterating or indexing gives ``item``."""

    item: object


@dataclass(frozen=True)
class Tup:
    """A fixed tuple (a ``tuple[A, B]`` return): unpacking gives its items in order."""

    items: tuple


@dataclass(frozen=True)
class Leaf:
    """A non-model config value (a number, a list, a dict of peaks)."""


def config_fields(root: type[BaseModel]) -> dict[str, dict[str, object]]:
    """Each config class name -> {field: config class name, or Leaf()}."""
    found: dict[str, dict[str, object]] = {}

    def visit(model: type[BaseModel]) -> None:
        fields: dict[str, object] = {}
        for name, info in model.model_fields.items():
            annotation = info.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                fields[name] = annotation.__name__
                visit(annotation)
            else:
                fields[name] = Leaf()
        found[model.__name__] = fields

    visit(root)
    return found


def leaf_paths(root: type[BaseModel]) -> list[tuple[str, list[tuple[str, str]]]]:
    """Every leaf key path with the (config class, field) pairs along it."""
    paths = []

    def visit(model: type[BaseModel], prefix: str, steps: list[tuple[str, str]]) -> None:
        for name, info in model.model_fields.items():
            here = [*steps, (model.__name__, name)]
            annotation = info.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                visit(annotation, f"{prefix}{name}.", here)
            else:
                paths.append((f"{prefix}{name}", here))

    visit(root, "", [])
    return paths


_CONTAINERS = {"list", "List", "Sequence", "Iterable", "Iterator", "set", "frozenset"}
_MAPPINGS = {"dict", "Dict", "Mapping", "MutableMapping"}


def annotation_type(node: ast.expr | None) -> object:
    """The type an annotation names (class name, Seq, Tup), or None."""
    if node is None:
        return None
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return annotation_type(ast.parse(node.value, mode="eval").body)
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):  # X | None
        sides = [annotation_type(node.left), annotation_type(node.right)]
        known = [s for s in sides if s not in (None, "None")]
        return known[0] if len(known) == 1 else None
    if isinstance(node, ast.Subscript):
        outer = annotation_type(node.value)
        args = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        if outer == "Optional":
            return annotation_type(args[0])
        if outer in _CONTAINERS:
            return Seq(annotation_type(args[0]))
        if outer in _MAPPINGS and len(args) == 2:
            return Seq(annotation_type(args[1]))
        if outer in ("tuple", "Tuple"):
            if len(args) == 2 and isinstance(args[1], ast.Constant) and args[1].value is ...:
                return Seq(annotation_type(args[0]))
            return Tup(tuple(annotation_type(a) for a in args))
    return None


class Project:
    """Classes and functions of the package, and the config reads found in it."""

    def __init__(self, files: list[Path], config: dict[str, dict[str, object]]) -> None:
        self.config = config
        self.trees = {path: ast.parse(path.read_text(), str(path)) for path in files}
        self.fields: dict[str, dict[str, object]] = {}  # project class -> attribute types
        self.methods: dict[str, dict[str, object]] = {}  # project class -> method returns
        self.functions: dict[str, object] = {}  # function name -> return type
        self.reads: set[tuple[str, str]] = set()
        for tree in self.trees.values():
            self._declarations(tree)

    def _declarations(self, tree: ast.Module) -> None:
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.functions[node.name] = annotation_type(node.returns)
            elif isinstance(node, ast.ClassDef):
                fields = self.fields.setdefault(node.name, {})
                methods = self.methods.setdefault(node.name, {})
                for item in node.body:
                    if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                        fields[item.target.id] = annotation_type(item.annotation)
                    elif isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        returns = annotation_type(item.returns)
                        decorators = {annotation_type(d) for d in item.decorator_list}
                        if decorators & {"property", "cached_property"}:
                            fields[item.name] = returns
                        else:
                            methods[item.name] = returns

    def analyse(self, skip: set[Path]) -> set[tuple[str, str]]:
        """(config class, field) pairs accessed in every file but ``skip``."""
        for _ in range(2):  # the second pass sees ``self.x = ...`` fields the first one found
            self.reads = set()
            for path, tree in self.trees.items():
                scope = Scope(self, {}, None, record=path not in skip)
                scope.block(tree.body)
        return self.reads


class Scope:
    """Names and their types inside one module, class body or function."""

    def __init__(self, project: Project, names: dict, owner: str | None, record: bool) -> None:
        self.project = project
        self.names = dict(names)
        self.owner = owner  # the class whose methods this scope's ``self`` belongs to
        self.record = record

    # -- statements ----------------------------------------------------------------------

    def block(self, statements: list[ast.stmt]) -> None:
        for statement in statements:
            self.statement(statement)

    def statement(self, node: ast.stmt) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            self.function(node)
        elif isinstance(node, ast.ClassDef):
            for decorator in node.decorator_list:
                self.expr(decorator)
            Scope(self.project, self.names, node.name, self.record).block(node.body)
        elif isinstance(node, ast.Assign):
            kind = self.expr(node.value)
            for target in node.targets:
                self.bind(target, kind)
        elif isinstance(node, ast.AnnAssign):
            kind = self.expr(node.value) if node.value is not None else None
            self.bind(node.target, annotation_type(node.annotation) or kind)
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            self.bind(node.target, self.item_of(self.expr(node.iter)))
            self.block(node.body + node.orelse)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                self.expr(item.context_expr)
                if item.optional_vars is not None:
                    self.bind(item.optional_vars, None)
            self.block(node.body)
        else:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    self.statement(child)
                elif isinstance(child, ast.expr):
                    self.expr(child)
                elif isinstance(child, (ast.excepthandler, ast.match_case)):
                    self.block(child.body)

    def function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for decorator in node.decorator_list:
            self.expr(decorator)
        inner = Scope(self.project, self.names, None, self.record)
        arguments = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
        for default in [*node.args.defaults, *node.args.kw_defaults]:
            if default is not None:
                self.expr(default)
        for index, argument in enumerate(arguments):
            kind = annotation_type(argument.annotation)
            if index == 0 and self.owner is not None and argument.arg == "self":
                kind, inner.owner = self.owner, self.owner
            inner.names[argument.arg] = kind
        inner.block(node.body)

    def bind(self, target: ast.expr, kind: object) -> None:
        if isinstance(target, ast.Name):
            self.names[target.id] = kind
        elif isinstance(target, (ast.Tuple, ast.List)):
            for index, element in enumerate(target.elts):
                if isinstance(kind, Tup) and index < len(kind.items):
                    self.bind(element, kind.items[index])
                else:
                    self.bind(element, self.item_of(kind))
        elif isinstance(target, ast.Attribute):
            owner = self.expr(target.value)
            if isinstance(owner, str) and owner == self.owner and kind is not None:
                self.project.fields.setdefault(owner, {}).setdefault(target.attr, kind)
        else:
            self.expr(target)

    # -- expressions ---------------------------------------------------------------------

    def item_of(self, kind: object) -> object:
        if isinstance(kind, Seq):
            return kind.item
        if isinstance(kind, Tup) and len(set(kind.items)) == 1:
            return kind.items[0]
        return None

    def attribute(self, owner: object, name: str) -> object:
        config = self.project.config.get(owner) if isinstance(owner, str) else None
        if config is not None:
            if name in config:
                if self.record:
                    self.project.reads.add((owner, name))
                return config[name]
            return None
        if isinstance(owner, str):
            return self.project.fields.get(owner, {}).get(name)
        return None

    def expr(self, node: ast.expr | None) -> object:
        """The type of ``node`` (None when unknown), recording config reads inside it."""
        if node is None:
            return None
        if isinstance(node, ast.Name):
            return self.names.get(node.id)
        if isinstance(node, ast.Attribute):
            return self.attribute(self.expr(node.value), node.attr)
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.Subscript):
            self.expr(node.slice)
            return self.item_of(self.expr(node.value))
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            kinds = [self.expr(e) for e in node.elts]
            return Tup(tuple(kinds)) if isinstance(node, ast.Tuple) else self.common(kinds)
        if isinstance(node, ast.Dict):
            for key in node.keys:
                self.expr(key)
            return self.common([self.expr(v) for v in node.values])
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            return self.comprehension(node)
        if isinstance(node, ast.IfExp):
            self.expr(node.test)
            return self.either([self.expr(node.body), self.expr(node.orelse)])
        if isinstance(node, ast.BoolOp):  # ``plan or cfg.forecast``
            return self.either([self.expr(value) for value in node.values])
        if isinstance(node, ast.NamedExpr):
            kind = self.expr(node.value)
            self.bind(node.target, kind)
            return kind
        if isinstance(node, ast.Lambda):
            inner = Scope(self.project, self.names, None, self.record)
            for argument in node.args.args:
                inner.names[argument.arg] = None
            inner.expr(node.body)
            return None
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr):
                self.expr(child)
            elif isinstance(child, ast.keyword):
                self.expr(child.value)
            elif isinstance(child, ast.comprehension):
                self.expr(child.iter)
        return None

    def either(self, kinds: list[object]) -> object:
        """The type of a value that is one of ``kinds`` (unknown ones aside)."""
        known = {k for k in kinds if k not in (None, "None")}
        return known.pop() if len(known) == 1 else None

    def common(self, kinds: list[object]) -> object:
        """The type of a container holding values of ``kinds``."""
        item = self.either(kinds)
        return None if item is None else Seq(item)

    def comprehension(self, node: ast.expr) -> object:
        inner = Scope(self.project, self.names, self.owner, self.record)
        for generator in node.generators:
            inner.bind(generator.target, inner.item_of(inner.expr(generator.iter)))
            for condition in generator.ifs:
                inner.expr(condition)
        if isinstance(node, ast.DictComp):
            inner.expr(node.key)
            return inner.common([inner.expr(node.value)])
        return inner.common([inner.expr(node.elt)])

    def call(self, node: ast.Call) -> object:
        for argument in node.args:
            self.expr(argument.value if isinstance(argument, ast.Starred) else argument)
        for keyword in node.keywords:
            self.expr(keyword.value)
        func = node.func
        if isinstance(func, ast.Name):
            if func.id == "getattr" and len(node.args) >= 2:
                return self.dynamic_attribute(node)
            if func.id in self.project.config or func.id in self.project.fields:
                return func.id  # constructing a class gives an instance of it
            return self.project.functions.get(func.id)
        if isinstance(func, ast.Attribute):
            owner = self.expr(func.value)
            if func.attr in ("values", "copy") and isinstance(owner, Seq):
                return owner
            if func.attr == "items" and isinstance(owner, Seq):
                return Seq(Tup((None, owner.item)))
            if func.attr in ("model_validate", "model_copy") and owner is None:
                name = annotation_type(func.value)
                return name if name in self.project.config else None
            if func.attr == "model_copy":
                return owner
            if isinstance(owner, str):
                return self.project.methods.get(owner, {}).get(func.attr)
            return self.project.functions.get(func.attr)
        self.expr(func)
        return None

    def dynamic_attribute(self, node: ast.Call) -> object:
        """``getattr(cfg, "name")`` is an access; a computed name gives the fields' common type."""
        owner = self.expr(node.args[0])
        name = node.args[1]
        if isinstance(name, ast.Constant) and isinstance(name.value, str):
            return self.attribute(owner, name.value)
        fields = self.project.config.get(owner) if isinstance(owner, str) else None
        kinds = set(fields.values()) if fields else set()
        return kinds.pop() if len(kinds) == 1 else None


def unread_paths(src: Path, root: type[BaseModel], skip: set[str]) -> list[str]:
    """Leaf key paths of ``root`` that no code under ``src`` (but the ``skip`` names) reads."""
    files = sorted(src.rglob("*.py"))
    project = Project(files, config_fields(root))
    reads = project.analyse({path for path in files if path.name in skip})
    return [path for path, steps in leaf_paths(root) if not all(s in reads for s in steps)]
