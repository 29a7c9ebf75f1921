//! A record's headers as Kafka holds them: names and values as bytes.
//!
//! rdkafka's own accessors (`Headers::iter`, `get`, `try_get`) unwrap each
//! name as UTF-8 text and panic on one that is not — a record any producer
//! can write. These read and write names as bytes instead, through
//! librdkafka's header functions, so no header can stop a partition.

use std::ffi::{CStr, c_char, c_void};
use std::ptr;

use rdkafka::Message;
use rdkafka::bindings as rd;
use rdkafka::message::{BorrowedHeaders, BorrowedMessage, Headers, OwnedHeaders, OwnedMessage};

/// The native headers behind `headers`.
///
/// SAFETY (of the uses below): rdkafka's `BorrowedHeaders` is a zero-sized
/// stand-in whose address is the `rd_kafka_headers_t` it borrows (rdkafka's
/// own `as_native_ptr` is this cast), and `OwnedHeaders::as_borrowed` hands
/// out exactly that.
fn native(headers: &OwnedHeaders) -> *mut rd::rd_kafka_headers_t {
    let borrowed: &BorrowedHeaders = headers.as_borrowed();
    borrowed as *const BorrowedHeaders as *mut rd::rd_kafka_headers_t
}

/// Each header of `headers`, in order: (name, value), both bytes.
pub fn each(headers: &OwnedHeaders) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
    let native = native(headers);
    (0..headers.count()).filter_map(move |index| {
        let mut name: *const c_char = ptr::null();
        let mut value: *const c_void = ptr::null();
        let mut size: usize = 0;
        // SAFETY: `native` is valid while `headers` is borrowed; librdkafka
        // fills the pointers with data the headers own.
        let error =
            unsafe { rd::rd_kafka_header_get_all(native, index, &mut name, &mut value, &mut size) };
        if error != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
            return None;
        }
        // SAFETY: a NUL-terminated name and a value of `size` bytes, owned
        // by `headers`, which outlives the returned slices.
        let name = unsafe { CStr::from_ptr(name) }.to_bytes();
        let value = (!value.is_null())
            .then(|| unsafe { std::slice::from_raw_parts(value.cast::<u8>(), size) });
        Some((name, value))
    })
}

/// The headers whose names are UTF-8 text, for the envelope decoder (the
/// names it looks for all are).
pub fn text_named(headers: Option<&OwnedHeaders>) -> Vec<(&str, Option<&[u8]>)> {
    headers
        .map(|headers| {
            each(headers)
                .filter_map(|(name, value)| Some((std::str::from_utf8(name).ok()?, value)))
                .collect()
        })
        .unwrap_or_default()
}

/// The header that counts how many follow-ups deep an event is.
pub const HOPS: &str = "eddy-hops";

/// How many follow-ups deep the record's event is: 0 unless it carries an
/// `eddy-hops` header.
pub fn hops(headers: Option<&OwnedHeaders>) -> u32 {
    headers
        .and_then(|headers| {
            each(headers)
                .filter(|(name, _)| *name == HOPS.as_bytes())
                .find_map(|(_, value)| std::str::from_utf8(value?).ok()?.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The header eddy puts on a record whose value it left unread in the
/// Kafka client, being over `max_event_bytes`: the value's size in bytes.
/// Only [`detach_bounded`] writes it; a record read with one loses it.
pub const VALUE_NOT_READ: &str = "eddy-value-not-read";

/// `message` copied out of the Kafka client, its value only if it is at
/// most `max_value` bytes: a larger one (a compressed batch can unpack to
/// hundreds of MB) stays where it is, to be freed with the message, and
/// the copy carries its size in a [`VALUE_NOT_READ`] header instead.
pub fn detach_bounded(message: &BorrowedMessage<'_>, max_value: usize) -> OwnedMessage {
    let size = message.payload_len();
    if message.payload().is_some() && size <= max_value {
        return message.detach();
    }
    // Too large, or no value at all: then the record itself could carry
    // the marker, which only eddy may write.
    let mut headers = OwnedHeaders::new();
    if let Some(original) = message.headers().map(BorrowedHeaders::detach) {
        for (name, value) in each(&original).filter(|(name, _)| *name != VALUE_NOT_READ.as_bytes())
        {
            add(&mut headers, name, value);
        }
    }
    if size > max_value {
        add(
            &mut headers,
            VALUE_NOT_READ.as_bytes(),
            Some(size.to_string().as_bytes()),
        );
    }
    OwnedMessage::new(
        None,
        message.key().map(<[u8]>::to_vec),
        message.topic().to_string(),
        message.timestamp(),
        message.partition(),
        message.offset(),
        (headers.count() > 0).then_some(headers),
    )
}

/// The size of the value [`detach_bounded`] left unread, if it did.
pub fn value_not_read(record: &OwnedMessage) -> Option<usize> {
    if record.payload().is_some() {
        return None;
    }
    each(record.headers()?)
        .filter(|(name, _)| *name == VALUE_NOT_READ.as_bytes())
        .find_map(|(_, value)| std::str::from_utf8(value?).ok()?.parse().ok())
}

/// Adds a header with a name of any bytes.
pub fn add(headers: &mut OwnedHeaders, name: &[u8], value: Option<&[u8]>) {
    let (value_ptr, value_size) = match value {
        Some(value) => (value.as_ptr().cast::<c_void>(), value.len() as isize),
        None => (ptr::null(), 0),
    };
    // SAFETY: the headers are owned and writable (`&mut`); librdkafka copies
    // the name and value.
    unsafe {
        rd::rd_kafka_header_add(
            native(headers),
            name.as_ptr().cast::<c_char>(),
            name.len() as isize,
            value_ptr.cast_mut(),
            value_size,
        );
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::message::Header;

    use super::*;

    #[test]
    fn names_that_are_not_utf8_are_read_and_written_as_bytes() {
        let mut headers = OwnedHeaders::new().insert(Header {
            key: "content-type",
            value: Some("application/json"),
        });
        add(&mut headers, b"bad\xffname", Some(b"v"));
        add(&mut headers, b"empty", None);
        let all: Vec<(Vec<u8>, Option<Vec<u8>>)> = each(&headers)
            .map(|(n, v)| (n.to_vec(), v.map(<[u8]>::to_vec)))
            .collect();
        assert_eq!(
            all,
            [
                (b"content-type".to_vec(), Some(b"application/json".to_vec())),
                (b"bad\xffname".to_vec(), Some(b"v".to_vec())),
                (b"empty".to_vec(), None),
            ]
        );
        let text = text_named(Some(&headers));
        assert_eq!(text.len(), 2, "the name that is not text is left out");
        assert_eq!(text[0].0, "content-type");
    }
}
