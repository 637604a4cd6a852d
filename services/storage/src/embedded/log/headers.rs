//! A record's headers as the log stores them: a JSON array of `[name, value]` pairs in
//! append order, readable with the `sqlite3` shell, or NULL when there are none (what
//! every record written before the log kept headers has).

use rusqlite::Row;
use rusqlite::types::{FromSqlError, Type, ValueRef};

/// The column's value for `headers`: `None` (NULL) when there are none.
pub(super) fn encode(headers: &[(String, String)]) -> Option<String> {
    // Serializing pairs of strings cannot fail; a failure would only lose the headers.
    (!headers.is_empty())
        .then(|| serde_json::to_string(headers).ok())
        .flatten()
}

/// The headers column `index` of `row` holds, in the order they were appended.
pub(super) fn read(row: &Row<'_>, index: usize) -> rusqlite::Result<Vec<(String, String)>> {
    decode(row.get_ref(index)?, index)
}

fn decode(column: ValueRef<'_>, index: usize) -> rusqlite::Result<Vec<(String, String)>> {
    let text = match column {
        ValueRef::Null => return Ok(Vec::new()),
        ValueRef::Text(text) | ValueRef::Blob(text) => text,
        other => {
            return Err(rusqlite::Error::FromSqlConversionFailure(
                index,
                other.data_type(),
                Box::new(FromSqlError::InvalidType),
            ));
        }
    };
    serde_json::from_slice(text)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(index, Type::Text, Box::new(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_come_back_in_order_and_none_is_null() {
        let headers = vec![
            ("ce_id".to_string(), "SKU-1/dc/2".to_string()),
            ("content-type".to_string(), "application/json".to_string()),
            (
                "ce_id".to_string(),
                "a repeated name \"quoted\"".to_string(),
            ),
        ];
        let stored = encode(&headers).expect("headers are stored");
        assert_eq!(
            decode(ValueRef::Text(stored.as_bytes()), 4).expect("decodes"),
            headers
        );
        assert_eq!(encode(&[]), None);
        assert!(decode(ValueRef::Null, 4).expect("NULL is none").is_empty());
    }

    #[test]
    fn a_damaged_column_is_an_error_not_an_empty_list() {
        assert!(decode(ValueRef::Text(b"[[\"ce_id\""), 4).is_err());
        assert!(decode(ValueRef::Integer(7), 4).is_err());
    }
}
