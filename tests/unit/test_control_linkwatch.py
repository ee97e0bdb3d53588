"""RTM_DELLINK and RTM_NEWLINK parsing (vxtun/io/linkwatch.py): the links deleted or renamed
(index and name) out of one netlink read, whatever else it holds, and nothing out of a
malformed one.  No root."""
from __future__ import annotations

import struct

from vxtun.io.linkwatch import IFLA_IFNAME, RTM_DELLINK, deleted_links

RTM_NEWLINK = 16
IFLA_MTU = 4


def rta(kind: int, payload: bytes) -> bytes:
    body = struct.pack("=HH", 4 + len(payload), kind) + payload
    return body + b"\0" * (-len(body) % 4)


def link_msg(kind: int, index: int, name: str | None, mtu: int = 1500) -> bytes:
    attrs = rta(IFLA_MTU, struct.pack("=I", mtu))
    if name is not None:
        attrs += rta(IFLA_IFNAME, name.encode() + b"\0")
    body = struct.pack("=BxHiII", 0, 1, index, 0, 0) + attrs
    return struct.pack("=IHHII", 16 + len(body), kind, 0, 0, 0) + body


def test_every_dellink_of_a_read_is_found():
    data = (link_msg(RTM_NEWLINK, 3, "vx42") + link_msg(RTM_DELLINK, 4, "vxtun0")
            + link_msg(RTM_DELLINK, 5, "a-fifteen-char") + link_msg(RTM_DELLINK, 6, None))
    assert deleted_links(data) == [(4, "vxtun0", None), (5, "a-fifteen-char", None)]


def test_a_malformed_read_gives_what_came_before_it_and_no_exception():
    good = link_msg(RTM_DELLINK, 4, "vxtun0")
    bad = bytearray(link_msg(RTM_DELLINK, 7, "vx7"))
    struct.pack_into("=I", bad, 0, 4000)                 # longer than the read
    assert deleted_links(good + bytes(bad)) == [(4, "vxtun0", None)]
    worse = bytearray(link_msg(RTM_DELLINK, 8, "vx8"))
    struct.pack_into("=H", worse, 16 + 16 + 8, 1)       # IFLA_IFNAME shorter than a header
    assert deleted_links(bytes(worse)) == []
    for cut in range(len(good)):
        assert deleted_links(good[:cut]) == []


def test_a_link_moved_to_another_namespace_says_where():
    # dev_change_net_namespace(): RTM_DELLINK in the old namespace with IFLA_NEW_NETNSID and
    # IFLA_NEW_IFINDEX (49); a deleted link has neither
    from vxtun.io.linkwatch import IFLA_NEW_NETNSID
    moved = bytearray(link_msg(RTM_DELLINK, 4, "vx42"))
    extra = rta(IFLA_NEW_NETNSID, struct.pack("=i", 0)) + rta(49, struct.pack("=i", 2))
    struct.pack_into("=I", moved, 0, len(moved) + len(extra))
    (link,) = deleted_links(bytes(moved) + extra)
    assert link == (4, "vx42", 0) and link.moved
    (gone,) = deleted_links(link_msg(RTM_DELLINK, 4, "vx42"))
    assert gone.netnsid is None and not gone.moved


def test_new_and_deleted_links_come_in_the_kernels_order():
    # a rename is an RTM_NEWLINK with the new name under the same index (dev_change_name())
    from vxtun.io.linkwatch import DelLink, NewLink, link_changes, new_links
    data = (link_msg(RTM_NEWLINK, 3, "ov0") + link_msg(RTM_DELLINK, 3, "ov0")
            + link_msg(RTM_NEWLINK, 4, None) + link_msg(RTM_NEWLINK, 5, "vx5"))
    assert link_changes(data) == [NewLink(3, "ov0"), DelLink(3, "ov0"), NewLink(5, "vx5")]
    assert [type(c) for c in link_changes(data)] == [NewLink, DelLink, NewLink]
    assert new_links(data) == [(3, "ov0"), (5, "vx5")]
    bad = bytearray(link_msg(RTM_NEWLINK, 7, "vx7"))
    struct.pack_into("=I", bad, 0, 4000)
    assert new_links(link_msg(RTM_NEWLINK, 6, "vx6") + bytes(bad)) == [(6, "vx6")]
