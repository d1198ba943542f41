"""Creates the devstack's AWS resources in moto (idempotently) with plain boto3.

Reads endpoints and names from the environment that devstack/up exports.
"""

import json
import os

import boto3


def main():
    env = os.environ
    sqs = boto3.client("sqs")
    dlq_url = sqs.create_queue(QueueName=env["DEVSTACK_DLQ_NAME"], Attributes={"MessageRetentionPeriod": "1209600"})["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "10"})
    queue_url = sqs.create_queue(
        QueueName=env["DEVSTACK_QUEUE_NAME"],
        Attributes={"RedrivePolicy": redrive, "VisibilityTimeout": "60", "MessageRetentionPeriod": "345600"},
    )["QueueUrl"]
    print(f"  queue {queue_url} (dead-letter queue {dlq_url}, maxReceiveCount 10)")

    ddb = boto3.client("dynamodb")
    table = env["DEVSTACK_TABLE"]
    if table not in ddb.list_tables()["TableNames"]:
        ddb.create_table(
            TableName=table,
            AttributeDefinitions=[
                {"AttributeName": "request_id", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
                {"AttributeName": "open_shard", "AttributeType": "S"},
                {"AttributeName": "updated_at", "AttributeType": "S"},
            ],
            KeySchema=[
                {"AttributeName": "request_id", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            # The sparse index of open requests the sweeper reads (docs/ARCHITECTURE.md).
            GlobalSecondaryIndexes=[
                {
                    "IndexName": "open-requests",
                    "KeySchema": [
                        {"AttributeName": "open_shard", "KeyType": "HASH"},
                        {"AttributeName": "updated_at", "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "KEYS_ONLY"},
                }
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        ddb.get_waiter("table_exists").wait(TableName=table)
        ddb.update_time_to_live(
            TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"}
        )
    print(f"  table {table} (request_id, sk; index open-requests; TTL on expires_at)")

    s3 = boto3.client("s3")
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    for bucket in (env["DEVSTACK_UPLOAD_BUCKET"], env["DEVSTACK_ARCHIVE_BUCKET"]):
        if bucket not in existing:
            s3.create_bucket(Bucket=bucket)
        print(f"  bucket {bucket}")

    ses = boto3.client("sesv2")
    sender = env["DEVSTACK_SES_FROM"]
    for identity in (sender, sender.split("@", 1)[1]):
        try:
            ses.create_email_identity(EmailIdentity=identity)
        except ses.exceptions.AlreadyExistsException:
            pass
    print(f"  SES identity {sender} and its domain")

    # Completion events: a reply queue (SQS destination), and a topic (SNS destination) with a
    # queue subscribed to it, raw delivery, so what the topic publishes can be read back.
    events_url = sqs.create_queue(QueueName=env["DEVSTACK_EVENTS_QUEUE_NAME"])["QueueUrl"]
    sns = boto3.client("sns")
    topic_arn = sns.create_topic(Name=env["DEVSTACK_EVENTS_TOPIC_NAME"])["TopicArn"]
    subscriber_url = sqs.create_queue(QueueName=env["DEVSTACK_EVENTS_TOPIC_NAME"] + "-subscriber")["QueueUrl"]
    subscriber_arn = sqs.get_queue_attributes(QueueUrl=subscriber_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    subscribed = {s["Endpoint"] for s in sns.list_subscriptions_by_topic(TopicArn=topic_arn)["Subscriptions"]}
    if subscriber_arn not in subscribed:
        sns.subscribe(
            TopicArn=topic_arn,
            Protocol="sqs",
            Endpoint=subscriber_arn,
            Attributes={"RawMessageDelivery": "true"},
        )
    print(f"  event queue {events_url}; topic {topic_arn} with {subscriber_url} subscribed")


if __name__ == "__main__":
    main()
