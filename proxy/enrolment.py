"""What an administrator hands a user when enrolling a second factor: a TOTP secret as an
``otpauth://`` URI and a QR code for any authenticator app, and single-use backup codes."""
from __future__ import annotations

import io
import secrets

import pyotp
import qrcode

from proxy.policy.otp import BACKUP_COUNT, DIGITS, STEP_SECONDS

ISSUER = "bindguard"
# Backup code characters: lower case and digits without the look-alikes 0/o, 1/l/i.
_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"


def new_secret() -> str:
    """A fresh random TOTP secret (base32, 160 bits as RFC 4226 recommends)."""
    return pyotp.random_base32(32)


def provisioning_uri(user: str, secret: str) -> str:
    """``otpauth://totp/bindguard:USER?secret=...&issuer=bindguard`` for authenticator apps."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).provisioning_uri(
        name=user, issuer_name=ISSUER)


def qr_text(uri: str, unicode: bool = True) -> str:
    """The URI as a QR code drawn with characters (half blocks, or ``##`` without Unicode)."""
    code = qrcode.QRCode(border=2, error_correction=qrcode.constants.ERROR_CORRECT_M)
    code.add_data(uri)
    code.make(fit=True)
    if unicode:
        out = io.StringIO()
        code.print_ascii(out=out, invert=True)
        return out.getvalue()
    return "".join("".join("##" if cell else "  " for cell in row) + "\n"
                   for row in code.get_matrix())


def new_backup_codes() -> list[str]:
    """Ten single-use codes, ``N-xxxx-xxxx``: N is the code's place, the rest 40 random bits."""
    return [f"{index}-" + "-".join("".join(secrets.choice(_ALPHABET) for _ in range(4))
                                   for _ in range(2))
            for index in range(BACKUP_COUNT)]
