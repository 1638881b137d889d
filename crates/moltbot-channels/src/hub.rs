//! (being written)
pub struct ChannelHub;
