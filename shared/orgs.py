"""Organizations and their API keys (stored as SHA-256 digests: a key is 256 random bits, so a slow hash
adds nothing)."""

from __future__ import annotations

import hashlib
import secrets
import uuid

KEY_PREFIX = "ck_"


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def ensure_organization(cur, name: str) -> uuid.UUID:
    cur.execute(
        """
        INSERT INTO organizations (id, name) VALUES (%s, %s)
        ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id
        """,
        (uuid.uuid4(), name),
    )
    return cur.fetchone()["id"]


def create_api_key(cur, organization_name: str) -> str:
    """Create the organization if needed and a new key for it; returns the key (shown only once)."""
    organization_id = ensure_organization(cur, organization_name)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    cur.execute(
        "INSERT INTO api_keys (id, organization_id, key_sha256, key_prefix) VALUES (%s, %s, %s, %s)",
        (uuid.uuid4(), organization_id, _digest(key), key[:10]),
    )
    return key


def authenticate(cur, key: str) -> tuple[uuid.UUID, str] | None:
    """(organization id, key prefix) for a valid, unrevoked key; None otherwise."""
    cur.execute(
        "SELECT organization_id, key_prefix FROM api_keys WHERE key_sha256 = %s AND revoked_at IS NULL",
        (_digest(key),),
    )
    row = cur.fetchone()
    return None if row is None else (row["organization_id"], row["key_prefix"])
