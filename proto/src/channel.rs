//! Channel ids, as the Channels section of PROTOCOL.md defines them: rooms
//! below 2^63, the inbox of `uin` at `2^63 | uin`, 0 not a channel. The
//! one definition of the inbox bit for every crate.

/// The high bit of a channel id: set for inboxes (`2^63 | uin`).
pub const INBOX_BIT: u64 = 1 << 63;

/// What a channel id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    /// Channel 0: not a channel.
    Invalid,
    /// A room (below 2^63): members by JOIN and LEAVE.
    Room,
    /// The inbox of the given uin: its owner is its only member.
    Inbox(u64),
}

/// Classifies a channel id.
pub fn kind_of(channel: u64) -> ChannelKind {
    if channel == 0 {
        ChannelKind::Invalid
    } else if channel & INBOX_BIT != 0 {
        ChannelKind::Inbox(channel & !INBOX_BIT)
    } else {
        ChannelKind::Room
    }
}

/// The inbox channel of `uin`.
pub fn inbox_of(uin: u64) -> u64 {
    INBOX_BIT | uin
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_classify_as_the_protocol_says() {
        assert_eq!(kind_of(0), ChannelKind::Invalid);
        assert_eq!(kind_of(1), ChannelKind::Room);
        assert_eq!(kind_of(INBOX_BIT - 1), ChannelKind::Room);
        assert_eq!(kind_of(INBOX_BIT), ChannelKind::Inbox(0));
        assert_eq!(kind_of(inbox_of(42)), ChannelKind::Inbox(42));
        assert_eq!(inbox_of(42), 0x8000_0000_0000_002a);
    }
}
