"""The node's encoders of its rare messages (SPEC.md): birth and will (state), health, ack, ota_progress
and pull, CBOR bytes out.

They are sent now and then (a start, a command, an update), so the node does not keep them resident: it
loads this module for each message and drops it afterwards (`agent.transient.run("protocols.up_status",
"state", ...)`). The messages it sends all the time, and the checks and encoding all of them share, are in
protocols.up, which this module imports and which never imports it; the bytes, checks and errors are as
its docstring says.
"""

from protocols.up import _bad, _encode, _int, _text


def state(boot, seq, online, firmware=None, config=None, reset=None, kind=None):
    """Birth (`online` True: firmware, config version and reset cause 0..5 required, sensor kind optional)
    or last will (False: nothing else)."""
    obj = {3: online}
    if online is True:
        obj[4] = _text(4, firmware, 32)
        obj[5] = _int(5, config)
        obj[6] = _int(6, reset, 0, 5)
        if kind is not None:
            obj[7] = _text(7, kind, 16)
    elif online is not False or firmware is not None or config is not None or reset is not None \
            or kind is not None:
        _bad(3, online)  # a will carries only boot id, seq and online=false
    return _encode(obj, boot, seq)


def health(boot, seq, uptime, heap_free=None, heap_min=None, flash_free=None, battery=None, rssi=None,
           outbox=None, dropped=None, errors=None, fault=None, reconnects=None, link_up=None):
    """Health: `uptime` s and the optional fields of protocols.health.FIELDS (keys 4..14, None: left out).
    All are uint32 but rssi (-127..0 dBm), errors (text code -> uint32 count) and fault (text)."""
    obj = {3: _int(3, uptime)}
    key = 4
    for value in (heap_free, heap_min, flash_free, battery, rssi, outbox, dropped, errors, fault,
                  reconnects, link_up):
        if value is None:
            pass
        elif key == 8:
            obj[8] = _int(8, value, -127, 0)
        elif key == 11:
            if not isinstance(value, dict) or len(value) > 32:
                _bad(11, value)
            for code in value:
                _text(11, code, 32)
                _int(11, value[code])
            obj[11] = value
        elif key == 12:
            obj[12] = _text(12, value)
        else:
            obj[key] = _int(key, value)
        key += 1
    return _encode(obj, boot, seq)


def ack(boot, seq, cid, status, reasons=None, config=None, result=None):
    """Command `cid` done (`status` 0) or refused (1, with reason codes); `config`: the config version in
    force; `result`: the command's answer (a ping's echo), any CBOR value nested at most 2 deep."""
    obj = {3: _int(3, cid), 4: _int(4, status, 0, 1)}
    if reasons is not None:
        if not isinstance(reasons, (list, tuple)) or len(reasons) > 32:
            _bad(5, reasons)
        for reason in reasons:
            _text(5, reason)
        obj[5] = list(reasons)
    if status == 1 and not reasons:
        _bad(5, reasons)  # a refusal gives at least one reason
    if config is not None:
        obj[6] = _int(6, config)
    if result is not None:
        obj[7] = result
    return _encode(obj, boot, seq, 3)  # the map is level 1, so `result` may nest 2 more


def ota_progress(boot, seq, cid, state, percent=None, reason=None, target=None):
    """Update `cid` is in `state` (1 downloading, 2 verifying, 3 staged, 4 done, 5 failed, 6 rolled back;
    a reason code required for 5 and 6) at `percent` 0..100, towards firmware version `target`."""
    obj = {3: _int(3, cid), 4: _int(4, state, 1, 6)}
    if percent is not None:
        obj[5] = _int(5, percent, 0, 100)
    if reason is not None:
        obj[6] = _text(6, reason, 32)
    elif state > 4:
        _bad(6, reason)
    if target is not None:
        obj[7] = _text(7, target, 32)
    return _encode(obj, boot, seq)


def pull(boot, seq, cid, index, offset, count):
    """Ask for `count` (1..8) chunks of file `index` (0 the envelope, i >= 1 the manifest's files[i-1]) of
    update `cid` from byte `offset` of its stored form (SPEC.md "OTA")."""
    return _encode({3: _int(3, cid), 4: _int(4, index), 5: _int(5, offset), 6: _int(6, count, 1, 8)}, boot, seq)
