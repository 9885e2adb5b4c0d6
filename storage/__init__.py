"""Durable state: database models, repositories, migrations, field encryption, the queue."""
