//! mailship: not yet modelled; every authenticated body is published as `mailship.unrecognized`.

use super::{Event, Inbound, ParseError, Parsed, parse_json};

pub fn parse(inbound: &Inbound<'_>) -> Result<Parsed, ParseError> {
    let (raw, _value) = parse_json(inbound.body)?;
    Ok(Parsed::Events(vec![Event::unrecognized("", raw)]))
}
