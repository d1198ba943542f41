"""Makes moto's DynamoDB behave like DynamoDB under concurrency.

moto 5.2's TransactWriteItems takes a deep copy of every table a transaction touches before it
starts and, when any condition fails, puts those copies back. Its server runs each request on
its own thread, so a transaction that fails restores a table as it was before every write that
other clients committed meanwhile: a committed transition disappears (seen with several
workers on one table). DynamoDB never does that: a transaction is atomic and isolated, and a
failed one writes nothing.

Five changes, applied by `install()` before the server starts:
1. Every DynamoDB request runs under one lock, so no request sees or interleaves with half a
   transaction (requests to the other services are not affected).
2. A failed transaction undoes only the items it wrote, from copies of those items taken just
   before each write, instead of restoring whole tables (which also cost a copy of the whole
   table per transaction).
3. `ClientRequestToken` is honoured as DynamoDB documents it: a transaction repeated with the
   token of one that succeeded within the last 10 minutes succeeds again without writing
   anything (so a retry after a lost response is not a failed condition), and the same token
   with other parameters is an `IdempotentParameterMismatchException`. moto ignores the token.
4. `size(path)` of an attribute the item does not have makes the comparison false, as in
   DynamoDB (a conditional write then fails its condition); moto raises an internal error
   (HTTP 500) instead, e.g. for `size(holders) < :cap` on an item not created yet.
5. A Query reads the partition it names instead of sorting the whole table first. moto's
   Table.query starts from `all_items()`, every item of the table sorted by key, and then keeps
   those of one partition (or, on an index, those with the index's key, which it sorts again):
   each Query cost time in proportion to the table, and under the lock of change 1 every other
   DynamoDB request waited for it, so the local stack slowed down as a run filled the table.
   DynamoDB reads one partition. The results, their order and their pages are unchanged: the
   query sorts what it keeps either way.

tests/python/test_moto_dynamodb.py hammers conditional transactions from many threads and
checks that no committed write is lost, and checks a Query's results, order and pages.
"""

import copy
import functools
import json
import threading
import time

from moto.dynamodb.exceptions import (
    ERROR_TYPE_PREFIX,
    ConditionalCheckFailed,
    DynamodbException,
    MockValidationException,
    MultipleTransactionsException,
    TooManyTransactionsException,
    TransactionCanceledException,
    TransactWriteSingleOpException,
)
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.table import Table
from moto.dynamodb.comparisons import FuncSize, get_filter_expression
from moto.core.responses import ActionResult
from moto.dynamodb.responses import DynamoHandler

LOCK = threading.RLock()

# DynamoDB's idempotency window for ClientRequestToken.
TOKEN_WINDOW_SECS = 600
# token -> (the request's parameters as canonical JSON, when it succeeded)
_tokens = {}


class IdempotentParameterMismatch(DynamodbException):
    def __init__(self):
        super().__init__(
            ERROR_TYPE_PREFIX + "IdempotentParameterMismatchException",
            message="The request uses the same client token as a previous, but non-identical request.",
        )

_OPS = {"ConditionCheck", "Put", "Delete", "Update"}


def _key_of(backend, table_name, op_type, op):
    if op_type != "Put":
        return op["Key"]
    attrs = op["Item"]
    table = backend.get_table(table_name)
    key = {table.hash_key_attr: attrs[table.hash_key_attr]}
    if table.range_key_attr is not None:
        key[table.range_key_attr] = attrs[table.range_key_attr]
    return key


def _restore(backend, table_name, key, old):
    """Puts back `old` (an Item, or None for "absent") under `key`."""
    table = backend.get_table(table_name)
    hash_value, range_value = backend.get_keys_value(table, key)
    if old is None:
        table.delete_item(hash_value, range_value)
    elif range_value is not None:
        table.items[hash_value][range_value] = old
    else:
        table.items[hash_value] = old


def transact_write_items(self, transact_items):
    """moto's algorithm with per-item undo instead of whole-table restore, under the lock."""
    with LOCK:
        if len(transact_items) > 100:
            raise TooManyTransactionsException()
        seen = set()
        undo = []  # (table, key, item before the write) in write order
        errors = []

        def rollback():
            for table_name, key, old in reversed(undo):
                _restore(self, table_name, key, old)

        for item in transact_items:
            original_item = None
            if len(item) > 1:
                raise TransactWriteSingleOpException
            try:
                op_type, op = next(iter(item.items()))
                if op_type not in _OPS:
                    raise ValueError("Unsupported transaction operation")
                table_name = op["TableName"]
                names = op.get("ExpressionAttributeNames")
                values = op.get("ExpressionAttributeValues")
                condition = op.get("ConditionExpression")
                key = _key_of(self, table_name, op_type, op)
                identity = (str(table_name), str(dict(sorted(key.items()))))
                if identity in seen:
                    raise MultipleTransactionsException()
                seen.add(identity)

                current = self.get_item(table_name, key)
                if condition is not None:
                    check = get_filter_expression(condition, names, values)
                    if not check.expr(current):
                        if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
                            original_item = current.to_json()["Attributes"]
                        raise ConditionalCheckFailed(item=original_item)
                if op_type != "ConditionCheck":
                    undo.append((table_name, key, copy.deepcopy(current)))
                if op_type == "Put":
                    self.put_item(
                        table_name,
                        op["Item"],
                        condition_expression=condition,
                        expression_attribute_names=names,
                        expression_attribute_values=values,
                    )
                elif op_type == "Delete":
                    self.delete_item(
                        table_name,
                        key,
                        condition_expression=condition,
                        expression_attribute_names=names,
                        expression_attribute_values=values,
                    )
                elif op_type == "Update":
                    self.update_item(
                        table_name,
                        key,
                        update_expression=op["UpdateExpression"],
                        condition_expression=condition,
                        expression_attribute_names=names,
                        expression_attribute_values=values,
                    )
                errors.append((None, None, None))
            except (MultipleTransactionsException, MockValidationException):
                rollback()
                raise
            except ConditionalCheckFailed as e:
                errors.append(("ConditionalCheckFailed", str(e.message), original_item))
            except Exception as e:  # noqa: BLE001 (moto reports every other failure per item too)
                errors.append((type(e).__name__, str(e), original_item))

        if any(code is not None for code, _, _ in errors):
            rollback()
            raise TransactionCanceledException(errors)


def _with_token(method):
    """The handler's TransactWriteItems with DynamoDB's ClientRequestToken semantics."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        token = self.body.get("ClientRequestToken")
        if not token:
            return method(self, *args, **kwargs)
        params = json.dumps(self.body.get("TransactItems"), sort_keys=True)
        now = time.monotonic()
        # Tokens are added in time order (under the lock), so the expired ones come first.
        while _tokens:
            oldest = next(iter(_tokens))
            if now - _tokens[oldest][1] <= TOKEN_WINDOW_SECS:
                break
            del _tokens[oldest]
        seen = _tokens.get(token)
        if seen is not None:
            if seen[0] != params:
                raise IdempotentParameterMismatch()
            return ActionResult({"ConsumedCapacity": [], "ItemCollectionMetrics": {}})
        result = method(self, *args, **kwargs)
        _tokens[token] = (params, now)
        return result

    return wrapper


def _locked(method):
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with LOCK:
            return method(self, *args, **kwargs)

    return wrapper


def install():
    """Applies the changes; idempotent."""
    if getattr(DynamoDBBackend, "_devstack_fixed", False):
        return
    DynamoDBBackend.transact_write_items = transact_write_items
    DynamoHandler.transact_write_items = _with_token(DynamoHandler.transact_write_items)
    DynamoHandler.call_action = _locked(DynamoHandler.call_action)
    FuncSize.expr = _size_of_missing_is_none(FuncSize.expr)
    Table.all_items = _partition_items(Table.all_items)
    Table.query = _querying(Table.query)
    DynamoDBBackend._devstack_fixed = True


def _size_of_missing_is_none(expr):
    """size() of a missing attribute: None, which moto's comparisons take as false."""

    @functools.wraps(expr)
    def wrapper(self, item):
        if self.attr.get_type(item) is None:
            return None
        return expr(self, item)

    return wrapper


# The query a thread is running: (table, hash key or None for an index query).
_querying_now = threading.local()


def _querying(query):
    """Table.query, telling all_items() which partition it wants."""

    @functools.wraps(query)
    def wrapper(self, hash_key, *args, **kwargs):
        index_name = kwargs.get("index_name", args[6] if len(args) > 6 else None)
        _querying_now.of = (self, None if index_name else hash_key)
        try:
            return query(self, hash_key, *args, **kwargs)
        finally:
            _querying_now.of = None

    return wrapper


def _partition_items(all_items):
    """Within a query: the named partition's items (base table) or all items unsorted (index);
    the query sorts what it keeps. Anywhere else: moto's all_items()."""

    @functools.wraps(all_items)
    def wrapper(self):
        of = getattr(_querying_now, "of", None)
        if of is None or of[0] is not self:
            return all_items(self)
        hash_key = of[1]
        if hash_key is None:
            partitions = self.items.values()
        elif hash_key in self.items:
            partitions = [self.items[hash_key]]
        else:
            return []
        if not self.range_key_attr:
            return list(partitions)
        return [item for partition in partitions for item in partition.values()]

    return wrapper
