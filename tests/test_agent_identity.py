"""The node's identity file (agent/identity.py): what it reads, and what it refuses with a reason."""

from __future__ import annotations

import base64

import pytest

from agent.errors import AgentError
from agent.identity import parse


def doc(**broker):
    return {"fleet": "city", "id": "wl-1", "kind": "water-level", "broker": {"host": "10.0.0.5", **broker}}


def test_the_reconnect_policy_defaults_to_a_minute_cap_and_can_be_set_per_site():
    ident = parse(doc())
    assert (ident.host, ident.port, ident.client_id) == ("10.0.0.5", 1883, "city-wl-1")
    assert ident.backoff == (1, 60) and ident.stable_s == 30
    ident = parse(doc(backoff_s=[0.5, 300], stable_s=0))
    assert ident.backoff == (0.5, 300) and ident.stable_s == 0


@pytest.mark.parametrize("broker, says", [
    ({"backoff_s": [0, 60]}, "backoff_s"), ({"backoff_s": [10, 5]}, "backoff_s"), ({"backoff_s": 5}, "backoff_s"),
    ({"backoff_s": ["1", 60]}, "numbers"), ({"stable_s": -1}, "stable_s"), ({"stable_s": True}, "numbers"),
    ({"port": 0}, "port"),
])
def test_a_bad_setting_is_refused_naming_it(broker, says):
    with pytest.raises(AgentError, match=says):
        parse(doc(**broker))


CA = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ2l0eWZsZWV0\n-----END CERTIFICATE-----\n"


def test_tls_needs_the_ca_as_pem_and_checks_the_broker_name_by_default():
    ident = parse(doc(tls=True, ca=CA + CA))
    assert ident.tls and ident.server_name == "10.0.0.5"
    assert ident.ca == [base64.b64decode("MIIBszCCAVmgAwIBAgIUQ2l0eWZsZWV0")] * 2  # DER, one per certificate
    assert parse(doc(tls=True, ca=CA, server_name="broker.city.example")).server_name == "broker.city.example"
    assert parse(doc(ca=CA)).ca is None  # no TLS asked for: nothing read


@pytest.mark.parametrize("broker, says", [
    ({"tls": True}, "needs ca"), ({"tls": True, "ca": "not a certificate"}, "needs ca"),
    ({"tls": True, "ca": "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----"}, "not valid PEM"),
    ({"tls": True, "ca": "-----BEGIN CERTIFICATE-----\nMIIB"}, "not valid PEM"),
    ({"tls": True, "ca": CA, "server_name": ""}, "server_name"),
])
def test_a_tls_identity_without_a_usable_ca_is_refused(broker, says):
    with pytest.raises(AgentError, match=says):
        parse(doc(**broker))
