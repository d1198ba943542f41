"""The devstack's DynamoDB under concurrency, seen by plain boto3: conditional transactions from
many threads at once, as several workers write them. DynamoDB never loses a committed write and
a failed transaction writes nothing; moto as shipped restores whole tables when a transaction
fails, which wipes other clients' commits (devstack/lib/moto_dynamodb_fix.py fixes that).
"""

import threading
import uuid

import boto3
import pytest
from botocore.config import Config

THREADS = 12
ROUNDS = 40
COUNTERS = 3

ddb = boto3.client("dynamodb", config=Config(retries={"max_attempts": 1}, max_pool_connections=THREADS * 2))


@pytest.fixture(scope="module")
def table():
    name = f"hammer-{uuid.uuid4().hex[:12]}"
    ddb.create_table(
        TableName=name,
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        BillingMode="PAY_PER_REQUEST",
    )
    yield name
    ddb.delete_table(TableName=name)


def version_of(table, counter):
    item = ddb.get_item(
        TableName=table, Key={"pk": {"S": counter}, "sk": {"S": "state"}}, ConsistentRead=True
    ).get("Item")
    return int(item["v"]["N"]) if item else 0


def advance(table, counter, seen):
    """One transition as the worker writes it: version check on the state item + event put."""
    state = {"pk": {"S": counter}, "sk": {"S": "state"}}
    if seen == 0:
        first = {"Put": {"TableName": table, "Item": {**state, "v": {"N": "1"}},
                         "ConditionExpression": "attribute_not_exists(pk)"}}
    else:
        first = {"Update": {"TableName": table, "Key": state, "UpdateExpression": "SET v = :next",
                            "ConditionExpression": "v = :seen",
                            "ExpressionAttributeValues": {":next": {"N": str(seen + 1)}, ":seen": {"N": str(seen)}}}}
    event = {"Put": {"TableName": table, "Item": {"pk": {"S": counter}, "sk": {"S": f"event#{seen + 1:06}"}},
                     "ConditionExpression": "attribute_not_exists(pk)"}}
    try:
        ddb.transact_write_items(TransactItems=[first, event])
        return True
    except ddb.exceptions.TransactionCanceledException:
        return False


def test_concurrent_conditional_transactions_lose_no_committed_write(table):
    committed = []  # (counter, version) of every transaction that succeeded
    mine = []  # unconditional-in-effect writes of each thread, on items nobody else touches
    lock = threading.Lock()
    errors = []

    def hammer(n):
        try:
            for r in range(ROUNDS):
                counter = f"c{(n + r) % COUNTERS}"
                seen = version_of(table, counter)
                if advance(table, counter, seen):
                    with lock:
                        committed.append((counter, seen + 1))
                own = f"t{n}-{r}"
                ddb.transact_write_items(TransactItems=[{"Put": {
                    "TableName": table, "Item": {"pk": {"S": own}, "sk": {"S": "state"}},
                    "ConditionExpression": "attribute_not_exists(pk)"}}])
                with lock:
                    mine.append(own)
        except Exception as e:  # noqa: BLE001 (reported below with the thread's number)
            errors.append((n, repr(e)))

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors

    conflicts = THREADS * ROUNDS - len(committed)
    assert conflicts > 0, "the hammer produced no failed transaction, so it proved nothing"
    for c in range(COUNTERS):
        counter = f"c{c}"
        versions = sorted(v for name, v in committed if name == counter)
        # Each committed version is the state item's next one: 1, 2, 3, … with no gap or repeat.
        assert versions == list(range(1, len(versions) + 1)), (counter, versions)
        assert version_of(table, counter) == len(versions), counter
        events = ddb.query(
            TableName=table, KeyConditionExpression="pk = :p AND begins_with(sk, :e)",
            ExpressionAttributeValues={":p": {"S": counter}, ":e": {"S": "event#"}}, ConsistentRead=True,
        )["Items"]
        assert len(events) == len(versions), (counter, len(events), len(versions))
    for own in mine:
        got = ddb.get_item(TableName=table, Key={"pk": {"S": own}, "sk": {"S": "state"}}, ConsistentRead=True)
        assert "Item" in got, f"committed write {own} disappeared"


def test_a_failed_transaction_writes_nothing(table):
    key = {"pk": {"S": f"atomic-{uuid.uuid4().hex}"}, "sk": {"S": "state"}}
    other = {"pk": key["pk"], "sk": {"S": "other"}}
    with pytest.raises(ddb.exceptions.TransactionCanceledException) as e:
        ddb.transact_write_items(TransactItems=[
            {"Put": {"TableName": table, "Item": {**other, "x": {"S": "written?"}}}},
            {"Update": {"TableName": table, "Key": key, "UpdateExpression": "SET v = :one",
                        "ConditionExpression": "attribute_exists(pk)", "ExpressionAttributeValues": {":one": {"N": "1"}}}},
        ])
    codes = [r["Code"] for r in e.value.response["CancellationReasons"]]
    assert codes == ["None", "ConditionalCheckFailed"]
    assert "Item" not in ddb.get_item(TableName=table, Key=other, ConsistentRead=True)


def test_client_request_token_makes_a_repeat_succeed_without_writing(table):
    key = {"pk": {"S": f"token-{uuid.uuid4().hex}"}, "sk": {"S": "state"}}
    put = [{"Put": {"TableName": table, "Item": {**key, "v": {"N": "1"}}, "ConditionExpression": "attribute_not_exists(pk)"}}]
    token = uuid.uuid4().hex
    ddb.transact_write_items(TransactItems=put, ClientRequestToken=token)
    # A retry after a lost response: same token, same request — success, no second write.
    ddb.transact_write_items(TransactItems=put, ClientRequestToken=token)
    # Without the token the same request is a new one, and its condition fails.
    with pytest.raises(ddb.exceptions.TransactionCanceledException):
        ddb.transact_write_items(TransactItems=put)
    changed = [{"Put": {"TableName": table, "Item": {**key, "v": {"N": "2"}}}}]
    with pytest.raises(ddb.exceptions.IdempotentParameterMismatchException):
        ddb.transact_write_items(TransactItems=changed, ClientRequestToken=token)
    got = ddb.get_item(TableName=table, Key=key, ConsistentRead=True)["Item"]
    assert got["v"] == {"N": "1"}


def test_size_of_a_missing_attribute_fails_the_condition_instead_of_erroring(table):
    # DynamoDB: the comparison is false, so the write is refused with a failed condition.
    key = {"pk": {"S": f"sem-{uuid.uuid4().hex[:8]}"}, "sk": {"S": "semaphore"}}
    take = dict(
        TableName=table,
        Key=key,
        UpdateExpression="SET holders.#h = :until",
        ConditionExpression="attribute_exists(holders.#h) OR size(holders) < :cap",
        ExpressionAttributeNames={"#h": "r1"},
        ExpressionAttributeValues={":until": {"N": "100"}, ":cap": {"N": "1"}},
    )
    with pytest.raises(ddb.exceptions.ConditionalCheckFailedException):
        ddb.update_item(**take)
    ddb.put_item(TableName=table, Item={**key, "holders": {"M": {}}})
    ddb.update_item(**take)
    # Full: another holder is refused; the holder itself may renew.
    with pytest.raises(ddb.exceptions.ConditionalCheckFailedException):
        ddb.update_item(**{**take, "ExpressionAttributeNames": {"#h": "r2"}})
    ddb.update_item(**take)


def query_all(**kwargs):
    """Every item a Query returns, page by page (Limit keeps the pages small)."""
    items, start = [], {}
    while True:
        out = ddb.query(Limit=3, **kwargs, **start)
        items += out["Items"]
        if "LastEvaluatedKey" not in out:
            return items
        start = {"ExclusiveStartKey": out["LastEvaluatedKey"]}


def test_a_query_returns_its_partition_or_index_key_in_order_page_by_page():
    """moto_dynamodb_fix reads the queried partition instead of the sorted table: same answers."""
    name = f"query-{uuid.uuid4().hex[:12]}"
    ddb.create_table(
        TableName=name,
        AttributeDefinitions=[{"AttributeName": a, "AttributeType": t} for a, t in
                              (("pk", "S"), ("sk", "S"), ("g", "S"), ("n", "N"))],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        GlobalSecondaryIndexes=[{"IndexName": "by-g", "Projection": {"ProjectionType": "ALL"},
                                 "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"},
                                               {"AttributeName": "n", "KeyType": "RANGE"}]}],
        BillingMode="PAY_PER_REQUEST",
    )
    try:
        written = []
        # Written out of key order, so an answer in key order was sorted.
        for p in (5, 1, 4, 2, 3, 0):
            for s in (6, 0, 3, 5, 1, 4, 2):
                item = {"pk": {"S": f"p{p}"}, "sk": {"S": f"s{s}"}, "n": {"N": str(p * 10 + s)}}
                if s % 2:
                    item["g"] = {"S": "odd"}
                ddb.put_item(TableName=name, Item=item)
                written.append(item)

        def keys(items):
            return [(i["pk"]["S"], i["sk"]["S"]) for i in items]

        one = {"TableName": name, "KeyConditionExpression": "pk = :p",
               "ExpressionAttributeValues": {":p": {"S": "p4"}}}
        assert keys(query_all(**one)) == [("p4", f"s{s}") for s in range(7)]
        assert keys(query_all(**one, ScanIndexForward=False)) == [("p4", f"s{s}") for s in reversed(range(7))]
        ranged = {**one, "KeyConditionExpression": "pk = :p AND sk BETWEEN :a AND :b",
                  "ExpressionAttributeValues": {":p": {"S": "p2"}, ":a": {"S": "s2"}, ":b": {"S": "s5"}}}
        assert keys(query_all(**ranged)) == [("p2", f"s{s}") for s in range(2, 6)]
        assert query_all(**{**one, "ExpressionAttributeValues": {":p": {"S": "p9"}}}) == []

        odd = sorted((i for i in written if "g" in i), key=lambda i: int(i["n"]["N"]))
        by_g = {"TableName": name, "IndexName": "by-g", "KeyConditionExpression": "g = :g",
                "ExpressionAttributeValues": {":g": {"S": "odd"}}}
        assert keys(query_all(**by_g)) == keys(odd)
        assert keys(query_all(**by_g, ScanIndexForward=False)) == keys(reversed(odd))
        # A Scan still sees every item.
        assert len(ddb.scan(TableName=name)["Items"]) == len(written)
    finally:
        ddb.delete_table(TableName=name)
