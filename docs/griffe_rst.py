"""A griffe extension that turns the reST markup of contrasphere's docstrings into the Markdown mkdocstrings renders.

The docstrings are Google-style (``Args:``, ``Returns:``) with reST inline markup: Sphinx roles (``:func:`x```,
``:class:`x```, ``:mod:`x```, ``:meth:``, ``:data:``, ``:attr:``, ``:exc:``), ``:math:`...``` and ``.. math::``
blocks, literal blocks introduced by ``::``, and ``Shape:`` paragraphs. The library's sources are not changed: this
rewrites each docstring's text after griffe has read it (statically, nothing is imported) and before it is parsed.

- A role whose target griffe finds in the loaded package (absolute, relative such as ``.sharding``, or a name in
  the scope of the docstring's object) becomes an autorefs cross-reference to it. The reference is "optional": it
  links where the object is rendered in the site and is plain code where it is not (a private helper such as
  ``contrasphere.pairwise._tiling``), so a reference to an existing object never fails the build. A target outside
  contrasphere (``torch.nn.Module``, ``dataclasses.replace``) is plain code.
- ``:math:`x``` becomes ``\\(x\\)`` and ``.. math::`` a ``\\[ ... \\]`` block, both rendered by pymdownx.arithmatex.
- The modules that :func:`contrasphere.losses.registry.function_loss` makes at import time
  (``InfoNCELoss = function_loss("info_nce", CF.info_nce, class_name=..., ...)``) are attributes to static analysis;
  they are turned into classes (base ``FunctionLoss``, the function's keyword-only hyperparameters as the
  constructor's, the docstring ``function_loss`` gives them), so that the modules are documented like the others.
"""

from __future__ import annotations

import ast
import html
import re
import textwrap
from typing import Any

import griffe

logger = griffe.get_logger("griffe_rst")

_ROLE = re.compile(r":(?:py:)?(func|class|mod|meth|data|attr|exc|obj|const):`([^`]+)`")
_MATH = re.compile(r":math:`([^`]+)`")
_MATH_BLOCK = re.compile(r"^(?P<indent>[ \t]*)\.\. math::[ \t]*(?P<rest>.*)$")
_SHAPE = re.compile(r"^(?P<indent>[ \t]*)Shape:[ \t]*$")
_LITERAL_ALONE = re.compile(r"\s+::$")


def _indent_of(line: str) -> int:
    return len(line) - len(line.lstrip())


def _blocks(text: str) -> str:
    """Rewrite the line-level constructs: ``.. math::`` blocks, ``Shape:`` paragraphs, ``::`` literal markers."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        math = _MATH_BLOCK.match(line)
        shape = _SHAPE.match(line)
        if math or shape:
            match = math or shape
            assert match is not None
            indent = match["indent"]
            body: list[str] = []
            if math and match["rest"].strip():
                body.append(match["rest"].strip())
            j = i + 1
            # the directive's body: the following lines indented deeper (blank lines inside are kept)
            while j < len(lines) and (not lines[j].strip() or _indent_of(lines[j]) > len(indent)):
                body.append(lines[j])
                j += 1
            while body and not body[-1].strip():
                body.pop()
                j -= 1
            block = textwrap.dedent("\n".join(body)).strip("\n").split("\n") if body else []
            if out and out[-1].strip():
                out.append("")
            if math:
                # arithmatex wants the block's delimiters on lines of their own, with no blank line inside
                out += [indent + "\\["] + [indent + b for b in block if b.strip()] + [indent + "\\]"]
            else:
                out += [indent + "**Shape:** " + (block[0].strip() if block else "")]
                out += [indent + b for b in block[1:]]
            out.append("")
            i = j
            while i < len(lines) and not lines[i].strip():
                i += 1
            continue
        if line.rstrip().endswith("::") and not line.lstrip().startswith(".."):
            stripped = line.rstrip()
            line = _LITERAL_ALONE.sub("", stripped) if _LITERAL_ALONE.search(stripped) else stripped[:-1]
        out.append(line)
        i += 1
    return "\n".join(out)


class SphinxRoles(griffe.Extension):
    """Convert the reST markup of every docstring of the loaded package (see the module docstring)."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        self._collection = loader.modules_collection
        self._function_losses(pkg)
        for obj in self._walk(pkg):
            if obj.docstring is not None:
                obj.docstring.value = self.convert(obj.docstring.value, obj)

    # --- walking -------------------------------------------------------------------------------------------------

    def _walk(self, obj: griffe.Object) -> Any:
        yield obj
        for member in obj.members.values():
            if member.is_alias:
                continue
            yield from self._walk(member)  # type: ignore[arg-type]

    # --- text ----------------------------------------------------------------------------------------------------

    def convert(self, text: str, obj: griffe.Object) -> str:
        text = _blocks(text)
        text = _MATH.sub(lambda m: "\\(" + m[1] + "\\)", text)
        return _ROLE.sub(lambda m: self._reference(m[1], m[2], obj), text)

    def _reference(self, role: str, target: str, obj: griffe.Object) -> str:
        target = target.strip()
        title = None
        explicit = re.fullmatch(r"(.+?)\s*<(.+)>", target)  # :func:`title <path>`
        if explicit:
            title, target = explicit[1], explicit[2]
        short = target.startswith("~")
        target = target.lstrip("~!")
        found = self._resolve(target.removesuffix("()"), obj)
        if found is not None and role in ("func", "class", "meth", "data", "obj"):
            found = self._shadowed(found)
        if title is None:
            title = target.rsplit(".", 1)[-1] if short else target
        if role in ("func", "meth") and not title.endswith(")"):
            title += "()"
        code = f"<code>{html.escape(title)}</code>"
        if found is None:
            return code
        return f'<autoref identifier="{found}" optional>{code}</autoref>'

    def _shadowed(self, path: str) -> str:
        """``contrasphere.functional.align_uniform`` names a submodule to griffe, but the function the package
        imports from it at run time: a reference to a function or class under that path means the function."""
        try:
            found = self._collection.get_member(path)
        except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
            return path
        name = path.rsplit(".", 1)[-1]
        if isinstance(found, griffe.Module) and name in found.members and not found.members[name].is_alias:
            return f"{path}.{name}"
        return path

    def _lookup(self, path: str) -> str | None:
        try:
            found = self._collection.get_member(path)
        except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
            return None
        # an alias keeps its own path, the public one the site documents it under (contrasphere.functional.nt_xent)
        return found.path

    def _resolve(self, target: str, obj: griffe.Object) -> str | None:
        module = obj if isinstance(obj, griffe.Module) else obj.module
        if target.startswith("."):
            level = len(target) - len(target.lstrip("."))
            base = module if module.is_package else module.parent
            for _ in range(level - 1):
                base = base.parent if base is not None and base.parent is not None else base
            if base is None:
                return None
            return self._lookup(f"{base.path}.{target[level:]}") if target[level:] else base.path
        if target.split(".", 1)[0] == module.package.name:
            return self._lookup(target)
        # a name in the scope of the object: its own members, then each enclosing object's, then the package's
        scope: griffe.Object | None = obj
        while scope is not None:
            head = target.split(".", 1)[0]
            if head in scope.members:
                return self._lookup(f"{scope.path}.{target}")
            scope = scope.parent
        return None

    # --- modules made by function_loss ---------------------------------------------------------------------------

    def _function_losses(self, pkg: griffe.Module) -> None:
        try:
            losses = pkg.get_member("losses")
        except KeyError:
            return
        for module in losses.modules.values():
            for name, attr in list(module.attributes.items()):
                made = _function_loss_call(attr)
                if made is not None:
                    cls = self._function_loss_class(module, attr, *made)
                    if cls is not None:
                        module.set_member(name, cls)

    def _function_loss_class(
        self, module: griffe.Module, attr: griffe.Attribute, fn_name: str, paper: str
    ) -> griffe.Class | None:
        try:
            fn = self._collection.get_member(f"{module.package.name}.functional.{fn_name}")
            fn = fn.final_target if fn.is_alias else fn
        except (KeyError, griffe.AliasResolutionError):
            logger.warning("function_loss(%s) in %s: no such function in contrasphere.functional", fn_name, module)
            return None
        if not isinstance(fn, griffe.Function):
            return None
        # the same rule as contrasphere.losses.registry._is_hyperparameter
        params = [
            p
            for p in fn.parameters
            if p.kind is griffe.ParameterKind.keyword_only
            and "Tensor" not in str(p.annotation)
            and "Generator" not in str(p.annotation)
        ]
        first_line = fn.docstring.value.strip().splitlines()[0] if fn.docstring and fn.docstring.value else ""
        doc = f"Module form of :func:`contrasphere.functional.{fn_name}` ({paper}).\n\n{first_line}"
        # the constructor's arguments are the function's hyperparameters: their descriptions are the function's
        names = {p.name for p in params}
        described = [
            item
            for section in (
                griffe.parse_google(fn.docstring, warn_unknown_params=False, warn_missing_types=False)
                if fn.docstring
                else []
            )
            if section.kind is griffe.DocstringSectionKind.parameters
            for item in section.value
            if names & {name.strip() for name in item.name.split(",")}  # "z_a, z_b: ..." names several
        ]
        if described:
            doc += "\n\nArgs:\n" + "\n".join(
                f"    {item.name}: " + item.description.replace("\n", "\n        ") for item in described
            )
        registry = self._collection.get_member(f"{module.package.name}.losses.registry")
        cls = griffe.Class(
            attr.name,
            lineno=attr.lineno,
            endlineno=attr.endlineno,
            bases=[griffe.ExprName("FunctionLoss", parent=registry)],
            docstring=griffe.Docstring(
                doc,
                lineno=attr.lineno,
                endlineno=attr.endlineno,
                parser=fn.docstring.parser if fn.docstring else None,
                parser_options=fn.docstring.parser_options if fn.docstring else None,
            ),
        )
        init = griffe.Function(
            "__init__",
            lineno=attr.lineno,
            endlineno=attr.endlineno,
            parameters=griffe.Parameters(
                griffe.Parameter("self", kind=griffe.ParameterKind.positional_or_keyword),
                *(
                    griffe.Parameter(p.name, annotation=p.annotation, kind=p.kind, default=p.default, docstring=None)
                    for p in params
                ),
            ),
        )
        cls.set_member("__init__", init)
        return cls


def _function_loss_call(attr: griffe.Attribute) -> tuple[str, str] | None:
    """``(function name, paper)`` if ``attr`` is ``NAME = function_loss(name, CF.fn, ..., paper="...")``."""
    value = attr.value
    if value is None:
        return None
    try:
        call = ast.parse(str(value), mode="eval").body
    except SyntaxError:
        return None
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "function_loss"):
        return None
    if len(call.args) < 2 or not isinstance(call.args[1], ast.Attribute):
        return None
    paper = next((k.value for k in call.keywords if k.arg == "paper"), None)
    paper_text = paper.value if isinstance(paper, ast.Constant) and isinstance(paper.value, str) else ""
    return call.args[1].attr, paper_text
