"""The MongoDB store (PyMongo's async API on the asyncio thread): todos and the audit log."""

from nursery.stores.mongo.store import MongoStore as MongoStore
from nursery.stores.mongo.store import open_mongo_store as open_mongo_store
