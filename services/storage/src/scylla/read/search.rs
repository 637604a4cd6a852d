//! Catalog search on ScyllaDB: every prefix (up to [`MAX_TERM`] characters) of every word
//! of a document is a row of `search_terms`; a query reads the partition of its longest
//! word's term and confirms each candidate against its document, with the stock figures
//! the domain computes.

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;
use stockflow_domain::read_model;

use super::ScyllaReadStore;
use crate::Result;
use crate::ports::{SearchHit, SearchQuery};
use crate::scylla::cql::errors::unreadable;
use crate::scylla::cql::query;
use crate::scylla::cql::rows::{DocumentRow, TermRow};

/// Longest indexed prefix of a word.
pub(super) const MAX_TERM: usize = 12;
/// Words of a query used at most: more only slows the search down.
const MAX_QUERY_WORDS: usize = 16;
/// Most hits one search returns.
const MAX_HITS: usize = 200;
/// Candidate SKUs read per page of a search term's partition.
const SEARCH_PAGE: i32 = 256;
/// Candidates one search looks at, at most: a term shared by a million SKUs costs a
/// bounded read, at the price of fewer hits than asked when most candidates fail the filters.
const SEARCH_CANDIDATES: usize = 2_000;
/// Candidates checked at once.
const SEARCH_PARALLEL: usize = 16;

/// The words of `text`, lowercased.
pub(super) fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// The text of a document: its name, then each attribute's name and value.
fn document_text(name: &str, attributes: &BTreeMap<String, String>) -> String {
    let mut text = name.to_string();
    for (k, v) in attributes {
        text.push(' ');
        text.push_str(k);
        text.push(' ');
        text.push_str(v);
    }
    text
}

/// Every prefix (1..=12 characters) of every word of a document.
pub(super) fn terms_of(name: &str, attributes: &BTreeMap<String, String>) -> BTreeSet<String> {
    let mut terms = BTreeSet::new();
    for word in words(&document_text(name, attributes)) {
        for (n, (i, c)) in word.char_indices().enumerate() {
            if n >= MAX_TERM {
                break;
            }
            terms.insert(word[..i + c.len_utf8()].to_string());
        }
    }
    terms
}

impl ScyllaReadStore {
    /// `sku` as a search hit, if its document has every wanted word and it passes the
    /// query's stock filter.
    async fn search_hit(
        &self,
        sku: String,
        wanted: &[String],
        search: &SearchQuery,
    ) -> Result<Option<SearchHit>> {
        let doc: Option<DocumentRow> = query::first(
            &self.session,
            "load search document",
            &self.st.get_document,
            (sku.as_str(),),
        )
        .await?;
        let Some(doc) = doc else {
            return Ok(None);
        };
        let name = doc.name.unwrap_or_default();
        let attributes = doc.attributes.unwrap_or_default();
        // Terms stop at 12 characters and only one word was looked up: confirm every word
        // against the document.
        let doc_words = words(&document_text(&name, &attributes));
        if !wanted
            .iter()
            .all(|w| doc_words.iter().any(|d| d.starts_with(w.as_str())))
        {
            return Ok(None);
        }
        let regions = self.region_totals(&sku, search.region.as_deref()).await?;
        let available = read_model::available_over(&regions);
        if search.in_stock && !read_model::in_stock(available) {
            return Ok(None);
        }
        Ok(Some(SearchHit {
            sku,
            name,
            attributes,
            available,
        }))
    }

    /// Catalog search (see the module docs).
    pub(super) async fn find(&self, search: &SearchQuery) -> Result<Vec<SearchHit>> {
        let wanted: Vec<String> = words(&search.text)
            .into_iter()
            .take(MAX_QUERY_WORDS)
            .collect();
        let limit = search.limit.clamp(1, MAX_HITS);
        // The longest word's term names the fewest SKUs: its partition, read page by page
        // in SKU order, gives the candidates, and each candidate's document confirms the
        // other words. At most SEARCH_CANDIDATES are looked at, whatever the catalog holds.
        let Some(driver) = wanted.iter().max_by_key(|w| w.chars().count()) else {
            return Ok(Vec::new());
        };
        let term: String = driver.chars().take(MAX_TERM).collect();
        let mut statement = self.st.terms.clone();
        statement.set_page_size(SEARCH_PAGE);
        let candidates = self
            .session
            .execute_iter(statement, (term,))
            .await
            .map_err(unreadable("search terms"))?
            .rows_stream::<TermRow>()
            .map_err(unreadable("search terms"))?;
        let wanted = &wanted;
        let mut checked = candidates
            .take(SEARCH_CANDIDATES)
            .map(|row| async move {
                let row = row.map_err(unreadable("search terms"))?;
                self.search_hit(row.sku, wanted, search).await
            })
            .buffered(SEARCH_PARALLEL);
        let mut hits = Vec::new();
        while let Some(hit) = checked.next().await {
            if let Some(hit) = hit? {
                hits.push(hit);
                if hits.len() >= limit {
                    break;
                }
            }
        }
        Ok(hits)
    }
}
