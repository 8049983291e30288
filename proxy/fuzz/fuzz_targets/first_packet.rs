//! Fuzzes what a client can send first: the length word, the first packet, and the
//! messages of the authentication phase. None of it may panic, and a packet that parses
//! must encode back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rwproxy::protocol::{self, FirstPacket};

fuzz_target!(|data: &[u8]| {
    if data.len() >= 4 {
        let _ = protocol::first_packet_body_len([data[0], data[1], data[2], data[3]]);
    }
    if let Ok(FirstPacket::Startup(params)) = protocol::parse_first_packet(data) {
        let encoded = protocol::startup_message(&params);
        assert_eq!(&encoded[4..], data, "startup round trip");
    }
    if let Some((&tag, body)) = data.split_first() {
        let _ = protocol::auth_step(tag, body);
    }
    if data.len() >= 5 {
        let _ = protocol::message_header([data[0], data[1], data[2], data[3], data[4]], protocol::MAX_AUTH_MESSAGE_LEN);
    }
});
