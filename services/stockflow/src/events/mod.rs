//! The events as other systems meet them: CloudEvents 1.0 headers on every record
//! ([`headers`], written by the publisher), or the structured form on a bus without
//! headers ([`structured`]), and the AsyncAPI 3.0 document of the topic ([`asyncapi`],
//! served at `/asyncapi.json` and printed by `stockflow asyncapi`).

pub mod asyncapi;
pub mod headers;
pub mod structured;
