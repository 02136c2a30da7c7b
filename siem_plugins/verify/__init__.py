"""``siem-plugins verify``: proof, from the outside, that the bucket matches the store.

For one integration, the objects in its sink's account folder whose keys have the
shipper's shape and the integration's extension are listed (with their metadata: one
``HEAD`` per object on S3) and compared with the event store and the delivery state
(docs/delivery.md#proving-it-verify):

* every event of the account up to the sink cursor is in some object's id range, unless
  it is a dead letter (set aside: reported, not a gap);
* no two objects' ranges meet (``dead-letters replay`` objects, marked ``siem-replay``,
  overlap on purpose and are accounted for instead);
* each object's ``siem-count`` plus ``siem-set-aside`` is the number of the account's
  events in its range;
* nothing of the shape is there that the state does not explain: an object beyond the
  cursor is allowed only at the pending intent's key (a crash between the upload and the
  cursor update), and no multipart upload of the shape is left open;
* with ``deep``, every object is read and its lines are compared byte for byte with the
  store's events formatted again by the integration's formatter.

The state is read before and after the listing; if a sync changed it meanwhile, the
listing is taken again, so a running ``siem-plugins run`` causes no false finding.

``report`` holds what is reported (:class:`Finding`, :class:`Report`, :func:`render`),
``buckets`` how a sink's objects are read (:class:`S3Bucket`, :class:`LocalFolder`),
``content`` how an object's content is streamed and compared, ``context`` what every
check works from, ``checks`` the checks made from the listing (and
:func:`verify_integration`), and ``deep`` those of ``--deep``.
"""

from __future__ import annotations

from .buckets import Bucket, LocalFolder, S3Bucket, bucket_of
from .checks import verify_integration
from .report import FINDING_KINDS, Finding, Report, VerifyError, render

__all__ = [
    "FINDING_KINDS",
    "Bucket",
    "Finding",
    "LocalFolder",
    "Report",
    "S3Bucket",
    "VerifyError",
    "bucket_of",
    "render",
    "verify_integration",
]
