"""Query depth and cost limits: a validation rule, so an over-large query is refused before
anything runs, with an error that says what was measured and what is allowed.

Depth counts levels of fields (``{ todos { nodes { id } } }`` is 3). The standard
introspection query is 15 deep (``ofType`` nests 9 times), so the limit (15) admits it;
our own types nest at most 4, so in practice it stops cyclic introspection abuse
(``fields { type { fields { type ...``).

Cost estimates how many values a response can hold: every field costs 1, and a list field
multiplies the cost of what is selected under it by how many items it can return: its
``first``/``limit`` argument (the largest allowed when it comes from a variable that is not
given), a known bound (``LIST_SIZES``), or ``DEFAULT_LIST_SIZE``. The list inside a page
(``nodes``, ``changes``) costs no second multiplication: its parent's argument bounds it.
Aliases and repeated fragments count every time they are used. Introspection lists count
``INTROSPECTION_LIST_SIZE`` each: they read the schema in memory, not the store, and
graphql-core's own MaxIntrospectionDepth rule already refuses their cycles; so the standard
introspection query costs under 10,000, far below the limit.

Both are tagged ``too_large`` (REST's code for a request that is too big). The rule keeps no
state between documents: ``limits_rule`` builds one per request (it needs the variables).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLInterfaceType,
    GraphQLObjectType,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
    VariableNode,
    get_named_type,
    get_nullable_type,
    is_list_type,
)
from graphql.type import GraphQLNamedType
from graphql.type.introspection import SchemaMetaFieldDef, TypeMetaFieldDef

from nursery.service.todos import MAX_CHANGES, MAX_PAGE

TOO_LARGE = "too_large"
DEFAULT_LIST_SIZE = 10
INTROSPECTION_LIST_SIZE = 5
# Fields whose list length is bounded otherwise than by an argument.
LIST_SIZES: dict[tuple[str, str], int] = {
    ("Query", "sessions"): 20,
    ("TodoConnection", "nodes"): 1,  # counted by ``todos(first:)``
    ("ChangeBatch", "changes"): 1,  # counted by ``changes(limit:)``
}
# Arguments that bound a list field's length, with the largest value they may take.
SIZE_ARGUMENTS: dict[str, int] = {"first": MAX_PAGE, "limit": MAX_CHANGES}


@dataclass(frozen=True, slots=True)
class QueryLimits:
    max_depth: int = 15
    max_cost: int = 50_000
    max_tokens: int = 2_000  # the parser's bound (the introspection query has 163 tokens)


def limits_rule(limits: QueryLimits, variables: dict[str, Any] | None) -> type[ValidationRule]:
    """A validation rule enforcing ``limits`` on the operations of one document."""

    class LimitsRule(ValidationRule):
        def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
            root = {
                OperationType.QUERY: self.context.schema.query_type,
                OperationType.MUTATION: self.context.schema.mutation_type,
                OperationType.SUBSCRIPTION: self.context.schema.subscription_type,
            }[node.operation]
            if root is None:
                return  # graphql-core's own rules report it
            measure = _Measure(self.context, variables or {})
            depth, cost = measure.selection_set(node.selection_set, root)
            name = f"the operation {node.name.value!r}" if node.name else "the operation"
            if depth > limits.max_depth:
                self.report_error(GraphQLError(
                    f"{name} is nested {depth} levels deep; at most {limits.max_depth} are allowed",
                    node,
                    extensions={"code": TOO_LARGE,
                                "details": {"depth": depth, "maxDepth": limits.max_depth}},
                ))
            if cost > limits.max_cost:
                self.report_error(GraphQLError(
                    f"{name} could return about {cost} values; at most {limits.max_cost} are"
                    " allowed (ask for smaller pages, fewer fields or fewer aliases)",
                    node,
                    extensions={"code": TOO_LARGE,
                                "details": {"cost": cost, "maxCost": limits.max_cost}},
                ))

    return LimitsRule


class _Measure:
    """Depth and cost of selection sets; fragments measured once each, cycles cut (the
    spec's NoFragmentCycles rule reports them)."""

    def __init__(self, context: ValidationContext, variables: dict[str, Any]) -> None:
        self._context = context
        self._variables = variables
        self._fragments: dict[str, tuple[int, int]] = {}
        self._visiting: set[str] = set()

    def selection_set(self, selections: SelectionSetNode | None, parent: Any) -> tuple[int, int]:
        """(depth, cost) of a selection set on type ``parent``; depth counts this set."""
        if selections is None:
            return 0, 0
        depth, cost = 0, 0
        for selection in selections.selections:
            if isinstance(selection, FieldNode):
                d, c = self.field(selection, parent)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                on = self._context.schema.get_type(condition.name.value) if condition else parent
                d, c = self.selection_set(selection.selection_set, on)
                d -= 1  # a fragment is not a level of the response
            elif isinstance(selection, FragmentSpreadNode):
                d, c = self.fragment(selection.name.value)
            else:  # pragma: no cover - the language has no other selection
                continue
            depth, cost = max(depth, d), cost + c
        return depth + 1, cost

    def fragment(self, name: str) -> tuple[int, int]:
        if name in self._fragments:
            return self._fragments[name]
        fragment = self._context.get_fragment(name)
        if fragment is None or name in self._visiting:
            return 0, 0
        self._visiting.add(name)
        d, c = self._fragment_body(fragment)
        self._visiting.discard(name)
        self._fragments[name] = (d, c)
        return d, c

    def _fragment_body(self, fragment: FragmentDefinitionNode) -> tuple[int, int]:
        on = self._context.schema.get_type(fragment.type_condition.name.value)
        d, c = self.selection_set(fragment.selection_set, on)
        return d - 1, c

    def field(self, node: FieldNode, parent: Any) -> tuple[int, int]:
        if not isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
            return 0, 1
        definition = parent.fields.get(node.name.value)
        if definition is None:
            # Introspection meta-fields (__schema, __type) are not in ``fields``.
            definition = _META_FIELDS.get(node.name.value)
        if definition is None:
            return 0, 1  # unknown: graphql-core's own rules report it
        target: GraphQLNamedType = get_named_type(definition.type)
        depth, cost = self.selection_set(node.selection_set, target)
        size = self._list_size(node, parent.name, definition)
        return depth, 1 + size * cost

    def _list_size(self, node: FieldNode, parent: str, definition: Any) -> int:
        for argument in node.arguments or ():
            bound = SIZE_ARGUMENTS.get(argument.name.value)
            if bound is not None:
                return self._int(argument.value, bound)
        for name in SIZE_ARGUMENTS:
            given = definition.args.get(name)
            if given is not None and isinstance(given.default_value, int):
                return given.default_value
        if (parent, node.name.value) in LIST_SIZES:
            return LIST_SIZES[(parent, node.name.value)]
        if not is_list_type(get_nullable_type(definition.type)):
            return 1
        return INTROSPECTION_LIST_SIZE if parent.startswith("__") else DEFAULT_LIST_SIZE

    def _int(self, value: Any, bound: int) -> int:
        if isinstance(value, IntValueNode):
            try:
                return max(0, min(int(value.value), bound))
            except ValueError:
                return bound
        if isinstance(value, VariableNode):
            given = self._variables.get(value.name.value)
            if isinstance(given, int) and not isinstance(given, bool):
                return max(0, min(given, bound))
        return bound


_META_FIELDS = {"__schema": SchemaMetaFieldDef, "__type": TypeMetaFieldDef}
