"""The INI configuration: one frozen dataclass per section, every problem reported at once."""
from __future__ import annotations

import configparser
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from proxy.inisection import ConfigError
from proxy.inisection import Section as _Section
from proxy.inisection import one_line as _one_line

DEFAULT_PATH = "/etc/bindguard/bindguard.ini"


def config_path(explicit: str | None) -> str:
    """The config file to read: ``-c``, else ``$BINDGUARD_CONFIG``, else the default path."""
    return explicit or os.environ.get("BINDGUARD_CONFIG") or DEFAULT_PATH


@dataclass(frozen=True)
class Upstream:
    """One directory server to forward to."""

    uri: str
    host: str
    port: int
    tls: bool


@dataclass(frozen=True)
class ProxyConfig:
    """The ``[proxy]`` section: listeners, directory servers, files."""

    listen: tuple[str, ...]
    upstream: tuple[Upstream, ...]
    upstream_timeout: float
    state: str
    audit_log: str
    max_pdu_size: int
    allow_anonymous: bool
    allow_sasl: bool
    key_file: str = ""  # encrypts TOTP secrets; default: otp.key beside the state file
    pam_socket: str = "/run/bindguard/pam.sock"  # "" = no PAM front
    metrics: str = ""  # Twisted endpoint of the Prometheus endpoint (/metrics); "" = none
    max_connections: int = 10000  # open client connections at most; more are closed at once
    max_connections_per_source: int = 1000  # from one client address
    idle_timeout: float = 900.0  # seconds without a request before a connection is closed
    pdu_timeout: float = 10.0  # seconds a started request may take to arrive whole
    upstream_ca_file: str = ""  # CA (PEM) for the directory's certificate; "" = system store
    upstream_starttls: bool = False  # StartTLS on ldap:// upstreams (ldaps:// are TLS anyway)
    require_tls: bool = False  # a password on a cleartext connection gets 13
    tls_certificate: str = ""  # PEM certificate (chain) for StartTLS and ssl: listeners
    tls_private_key: str = ""


@dataclass(frozen=True)
class DirectoryConfig:
    """The ``[directory]`` section: how a user name becomes a DN."""

    user_dn_template: str | None
    search_base: str | None
    search_filter: str
    bind_dn: str | None
    bind_password_file: str | None


@dataclass(frozen=True)
class ComplianceConfig:
    """The ``[security_compliance]`` section (Keystone's names and meaning)."""

    lockout_failure_attempts: int | None
    lockout_duration: int | None
    lockout_failure_window: int
    disable_user_account_days_inactive: int | None = None
    password_expires_days: int | None = None
    password_expires_ignore_user_ids: tuple[str, ...] = ()
    password_expiry_warning_days: int = 14
    password_regex: str | None = None
    password_regex_description: str | None = None
    password_min_length: int = 0
    password_min_character_classes: int = 0
    unique_last_password_count: int = 0
    minimum_password_age: int = 0
    change_password_upon_first_use: bool = False
    enforce_2fa: bool = False
    twofa_exempt: tuple[str, ...] = ()  # 2fa_exempt: names, DNs or subtrees


@dataclass(frozen=True)
class Config:
    """The whole configuration."""

    proxy: ProxyConfig
    directory: DirectoryConfig
    compliance: ComplianceConfig
    warnings: tuple[str, ...] = ()  # `section.key: ...` lines for what is valid but unwise
    pam_backend: PamBackendConfig | None = None  # [pam_backend]: local accounts through PAM


@dataclass(frozen=True)
class PamBackendConfig:
    """The ``[pam_backend]`` section: local accounts checked by an existing PAM service."""

    service: str  # the PAM service (a file in /etc/pam.d) that checks the password
    users: tuple[str, ...]  # the user names it checks; everyone else goes to the directory


# Options of the contract that later releases implement. Setting one is an error rather than a
# silent no-op; a value equal to "off" is accepted because it changes nothing.

_KNOWN: dict[str, set[str]] = {
    "proxy": {"listen", "upstream", "upstream_timeout", "state", "audit_log", "max_pdu_size",
              "allow_anonymous", "allow_sasl", "key_file", "pam_socket", "metrics",
              "max_connections", "max_connections_per_source", "idle_timeout", "pdu_timeout",
              "upstream_ca_file", "upstream_starttls", "require_tls", "tls_certificate",
              "tls_private_key"},
    "pam_backend": {"service", "users"},
    "directory": {"user_dn_template", "search_base", "search_filter", "bind_dn",
                  "bind_password_file"},
    "security_compliance": {"lockout_failure_attempts", "lockout_duration",
                            "lockout_failure_window", "disable_user_account_days_inactive",
                            "password_expires_days", "password_expires_ignore_user_ids",
                            "password_expiry_warning_days", "password_regex",
                            "password_regex_description", "password_min_length",
                            "password_min_character_classes", "unique_last_password_count",
                            "minimum_password_age", "change_password_upon_first_use",
                            "enforce_2fa", "2fa_exempt"},
}


def parse_config(text: str, source: str = "<config>") -> Config:
    """Parse INI text into a Config; raise ConfigError listing every problem."""
    parser = configparser.ConfigParser(
        interpolation=None, inline_comment_prefixes=(";", "#"), comment_prefixes=(";", "#"),
        default_section="\x00unused", strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    try:
        parser.read_string(text, source=source)
    except configparser.Error as exc:
        raise ConfigError([f"config: {_one_line(str(exc))}"]) from None
    problems: list[str] = []
    for name in parser.sections():
        if name not in _KNOWN:
            problems.append(f"{name}: unknown section")
    sections = {name: _Section(name, dict(parser[name]) if parser.has_section(name) else {},
                               problems) for name in _KNOWN}
    for section in sections.values():
        _check_keys(section)
    proxy = _read_proxy(sections["proxy"], parser.has_section("proxy"))
    directory = _read_directory(sections["directory"])
    warnings: list[str] = []
    compliance = _read_compliance(sections["security_compliance"], warnings, proxy.allow_sasl)
    pam_backend = _read_pam_backend(sections["pam_backend"], parser.has_section("pam_backend"))
    if problems:
        raise ConfigError(problems)
    return Config(proxy=proxy, directory=directory, compliance=compliance,
                  warnings=tuple(warnings), pam_backend=pam_backend)


def load_config(path: str) -> Config:
    """Read and parse the config file at ``path``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"config: cannot read {path}: {_one_line(str(exc))}"]) from None
    return parse_config(text, source=path)


def _check_keys(section: _Section) -> None:
    for key in section.values:
        if key not in _KNOWN[section.name]:
            section.problem(key, "unknown option")


def _read_proxy(section: _Section, present: bool) -> ProxyConfig:
    if not present:
        section.problems.append("proxy: section missing (it needs at least upstream)")
    listen = section.items("listen") or ("tcp:389",)
    for spec in listen:
        _check_endpoint(section, spec)
    upstream = tuple(u for u in (_upstream(section, item) for item in section.items("upstream"))
                     if u is not None)
    if present and not section.items("upstream"):
        section.problem("upstream", "required: at least one ldap:// URI of the directory")
    state = section.raw("state") or "/var/lib/bindguard/state.sqlite"
    if state.startswith(("postgresql:", "postgres:")):
        section.problem("state", "PostgreSQL is not supported yet in this release; give the "
                                 "path of an SQLite file")
    return ProxyConfig(
        listen=listen,
        upstream=upstream,
        upstream_timeout=section.number("upstream_timeout", 5.0, 0.0),
        state=state,
        audit_log=section.raw("audit_log") or "/var/log/bindguard/audit.jsonl",
        max_pdu_size=section.integer("max_pdu_size", 4 * 1024 * 1024, 1024) or 0,
        allow_anonymous=section.boolean("allow_anonymous", True),
        allow_sasl=section.boolean("allow_sasl", True),
        key_file=section.raw("key_file") or os.path.join(os.path.dirname(state) or ".",
                                                         "otp.key"),
        pam_socket=_pam_socket(section),
        metrics=_metrics(section),
        max_connections=section.integer("max_connections", 10000, 1) or 0,
        max_connections_per_source=section.integer("max_connections_per_source", 1000, 1) or 0,
        idle_timeout=section.number("idle_timeout", 900.0, 0.0),
        pdu_timeout=section.number("pdu_timeout", 10.0, 0.0),
        **_read_tls(section, listen, upstream),
    )


def _read_tls(section: _Section, listen: tuple[str, ...],
              upstream: tuple[Upstream, ...]) -> dict[str, Any]:
    """TLS options, with the files they name and what they contradict checked."""
    values: dict[str, Any] = {
        "upstream_ca_file": section.raw("upstream_ca_file") or "",
        "upstream_starttls": section.boolean("upstream_starttls", False),
        "require_tls": section.boolean("require_tls", False),
        "tls_certificate": section.raw("tls_certificate") or "",
        "tls_private_key": section.raw("tls_private_key") or "",
    }
    for key in ("upstream_ca_file", "tls_certificate", "tls_private_key"):
        if values[key] and not os.access(values[key], os.R_OK):
            section.problem(key, f"cannot read {values[key]}")
    if bool(values["tls_certificate"]) != bool(values["tls_private_key"]):
        missing = "tls_private_key" if values["tls_certificate"] else "tls_certificate"
        section.problem(missing, "required with the other of tls_certificate, tls_private_key")
    ssl_listeners = [s for s in listen if s.split(":", 1)[0] in ("ssl", "tls")]
    if ssl_listeners and not values["tls_certificate"]:
        section.problem("listen", f"{ssl_listeners[0]}: a TLS listener needs tls_certificate "
                                  "and tls_private_key")
    if values["require_tls"] and not values["tls_certificate"]:
        section.problem("require_tls", "no client could comply: set tls_certificate and "
                                       "tls_private_key (StartTLS, ssl: listeners)")
    if values["upstream_ca_file"] and not any(u.tls for u in upstream) \
            and not values["upstream_starttls"]:
        section.problem("upstream_ca_file", "has no effect without ldaps:// upstreams or "
                                            "upstream_starttls = true")
    return values


def _metrics(section: _Section) -> str:
    spec = section.raw("metrics") or ""
    if spec:
        _check_endpoint(section, spec, "metrics")
    return spec


def _pam_socket(section: _Section) -> str:
    if "pam_socket" not in section.values:
        return "/run/bindguard/pam.sock"
    path = section.values["pam_socket"]
    if path and not os.path.isabs(path):
        section.problem("pam_socket", f"must be an absolute path, got {path!r}")
    return path


def tls_listener_as_tcp(spec: str) -> str:
    """An ``ssl:PORT[:interface=...][:privateKey=...][:certKey=...]`` listener as the plain
    TCP endpoint bindguard listens on (it wraps the connections in TLS itself, so that
    certificates can be reloaded); the key and certificate come from tls_* options."""
    parts = spec.split(":")
    kept = [p for p in parts[1:] if not p.startswith(("privateKey=", "certKey=",
                                                       "extraCertChain=", "sslmethod=",
                                                       "dhParameters="))]
    return ":".join(["tcp", *kept])


def _check_endpoint(section: _Section, spec: str, key: str = "listen") -> None:
    """A listen item must be a Twisted server endpoint string bindguard can serve."""
    from twisted.internet.endpoints import serverFromString

    if spec.split(":", 1)[0] in ("ssl", "tls"):
        if key != "listen":
            section.problem(key, f"{spec}: TLS is not supported here; use a tcp: endpoint")
            return
        spec = tls_listener_as_tcp(spec)
    try:
        serverFromString(None, spec)
    except (ValueError, TypeError, KeyError) as exc:
        section.problem(key, f"{spec}: not a valid endpoint ({_one_line(str(exc))})")


def _upstream(section: _Section, uri: str) -> Upstream | None:
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        section.problem("upstream", f"not a valid URI: {uri!r}")
        return None
    if parts.scheme not in ("ldap", "ldaps") or not parts.hostname \
            or parts.path not in ("", "/") or port == 0:
        section.problem("upstream", f"expected ldap://HOST[:PORT] or ldaps://HOST[:PORT], "
                                    f"got {uri!r}")
        return None
    tls = parts.scheme == "ldaps"
    return Upstream(uri=uri, host=parts.hostname, port=port or (636 if tls else 389), tls=tls)


def _read_pam_backend(section: _Section, present: bool) -> PamBackendConfig | None:
    if not present:
        return None
    service = section.raw("service")
    users = section.items("users")
    if not service:
        section.problem("service", "required: the PAM service that checks local passwords "
                                   "(a file in /etc/pam.d)")
    elif "/" in service or service.startswith("."):
        section.problem("service", f"a service name, not a path: {service!r}")
    if not users:
        section.problem("users", "required: the user names the PAM backend checks (everyone "
                                 "else goes to the directory)")
    return PamBackendConfig(service or "", users)


def _read_directory(section: _Section) -> DirectoryConfig:
    template = section.raw("user_dn_template")
    search_base = section.raw("search_base")
    search_filter = section.raw("search_filter") or "(uid={user})"
    if template is not None and search_base is not None:
        section.problem("search_base", "set either user_dn_template or search_base, not both")
    if template is not None and "{user}" not in template:
        section.problem("user_dn_template", "must contain {user}")
    if "{user}" not in search_filter:
        section.problem("search_filter", "must contain {user}")
    password_file = section.raw("bind_password_file")
    if password_file is not None and not os.access(password_file, os.R_OK):
        section.problem("bind_password_file", f"cannot read {password_file}")
    if search_base is None:
        for key in ("bind_dn", "bind_password_file"):
            if section.raw(key) is not None:
                section.problem(key, "only used with search_base")
    return DirectoryConfig(
        user_dn_template=template,
        search_base=search_base,
        search_filter=search_filter,
        bind_dn=section.raw("bind_dn"),
        bind_password_file=password_file,
    )


def _read_compliance(section: _Section, warnings: list[str],
                     sasl_allowed: bool) -> ComplianceConfig:
    attempts = section.integer("lockout_failure_attempts", None, 1)
    duration = section.integer("lockout_duration", None, 1)
    window = section.integer("lockout_failure_window", 0, 0) or 0
    if attempts is None:
        for key in ("lockout_duration", "lockout_failure_window"):
            if section.raw(key) is not None:
                section.problem(key, "has no effect without lockout_failure_attempts")
    expires = section.integer("password_expires_days", None, 1)
    if expires is None:
        for key in ("password_expires_ignore_user_ids", "password_expiry_warning_days"):
            if section.raw(key) is not None:
                section.problem(key, "has no effect without password_expires_days")
    minimum_age = section.integer("minimum_password_age", 0, 0) or 0
    if expires is not None and minimum_age >= expires:
        # Keystone's doctor: a password could expire before its owner may change it.
        section.problem("minimum_password_age", f"must be less than password_expires_days "
                                                f"({minimum_age} >= {expires})")
    regex = section.raw("password_regex")
    description = section.raw("password_regex_description")
    if regex is not None:
        try:
            re.compile(regex)
        except re.error as exc:
            section.problem("password_regex", f"does not compile: {exc}")
        if description is None:
            warnings.append("security_compliance.password_regex: warning: no "
                            "password_regex_description; users refused by it will not be told "
                            "what the rule is")
    elif description is not None:
        section.problem("password_regex_description", "has no effect without password_regex")
    enforce = section.boolean("enforce_2fa", False)
    if enforce and sasl_allowed:
        section.problem("enforce_2fa", "SASL binds pass through unchecked and would log in "
                                       "without a second factor: set [proxy] allow_sasl = false")
    if not enforce and section.items("2fa_exempt"):
        section.problem("2fa_exempt", "has no effect without enforce_2fa = true (an enrolled "
                                      "user always gives a code)")
    classes = section.integer("password_min_character_classes", 0, 0) or 0
    if classes > 4:
        section.problem("password_min_character_classes",
                        f"at most 4 (lower, upper, digit, other), got {classes}")
        classes = 0
    return ComplianceConfig(
        lockout_failure_attempts=attempts,
        lockout_duration=duration,
        lockout_failure_window=window,
        disable_user_account_days_inactive=section.integer(
            "disable_user_account_days_inactive", None, 1),
        password_expires_days=expires,
        password_expires_ignore_user_ids=section.items("password_expires_ignore_user_ids"),
        password_expiry_warning_days=section.integer("password_expiry_warning_days", 14, 0) or 0,
        password_regex=regex,
        password_regex_description=description,
        password_min_length=section.integer("password_min_length", 0, 0) or 0,
        password_min_character_classes=classes,
        unique_last_password_count=section.integer("unique_last_password_count", 0, 0) or 0,
        minimum_password_age=minimum_age,
        change_password_upon_first_use=section.boolean("change_password_upon_first_use", False),
        enforce_2fa=enforce,
        twofa_exempt=section.items("2fa_exempt"),
    )
