"""TOTP secrets at rest: sealed with AES-256-GCM under a key kept in a file only its owner
may read (``[proxy] key_file``; by default ``otp.key`` beside the state file).

Each sealed secret carries its own random nonce and is bound to its account's DN (associated
data), so a sealed value copied onto another account does not open.
"""
from __future__ import annotations

import base64
import os
import stat

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_VERSION = "v1:"
_NONCE = 12


class KeyFileError(Exception):
    """The key file is missing, unsafe or not a key."""


class SealError(Exception):
    """A sealed secret does not open with this key (another key file, or tampered with)."""


class SecretBox:
    """Seals and opens TOTP secrets. Its repr never shows the key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise KeyFileError("a key is 32 bytes")
        self._aead = AESGCM(key)

    @classmethod
    def from_file(cls, path: str, create: bool = True) -> SecretBox:
        """The key in ``path``, created (mode 0600) when missing and ``create``.

        A key file that its group or others may read or write is refused: whoever reads it
        can open every TOTP secret in the state file.
        """
        if create and not os.path.exists(path):
            _create(path)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            raise KeyFileError(f"{path}: cannot read the key file: {exc.strerror}") from None
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                raise KeyFileError(f"{path}: not a regular file")
            if mode & 0o077:
                raise KeyFileError(f"{path}: others may read the key file (mode "
                                   f"{stat.S_IMODE(mode):04o}); make it 0600 "
                                   f"(chmod 600 {path})")
            text = os.read(fd, 4096)
        finally:
            os.close(fd)
        try:
            return cls(base64.b64decode(text.strip(), validate=True))
        except (ValueError, KeyFileError):
            raise KeyFileError(f"{path}: not a bindguard key (32 bytes, base64)") from None

    def seal(self, dn: str, secret: str) -> str:
        """``secret`` sealed for the account ``dn``."""
        nonce = os.urandom(_NONCE)
        sealed = self._aead.encrypt(nonce, secret.encode("ascii"), dn.encode("utf-8"))
        return _VERSION + base64.b64encode(nonce + sealed).decode("ascii")

    def open(self, dn: str, sealed: str) -> str:
        """The secret sealed for ``dn``; SealError if it does not open."""
        if not sealed.startswith(_VERSION):
            raise SealError("unknown sealed format")
        try:
            raw = base64.b64decode(sealed[len(_VERSION):], validate=True)
            plain = self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], dn.encode("utf-8"))
        except (ValueError, InvalidTag):
            raise SealError("the TOTP secret does not open with this key file") from None
        return plain.decode("ascii")

    def __repr__(self) -> str:
        return "SecretBox(AES-256-GCM)"


def _create(path: str) -> None:
    """Write a new random key, readable by its owner only; never replace an existing one."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return  # another process made it first: use theirs
    try:
        os.write(fd, base64.b64encode(os.urandom(32)) + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
