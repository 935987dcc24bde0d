//! The etcd transactions vswitchd runs, built from the records' keys:
//! comparisons, operations, and what their answers say.

use super::records::{self, Revision};
use etcdv3client::pb::{self, compare, request_op, Compare, RequestOp, TxnRequest};

/// "`key` does not exist" (its create revision is 0).
pub fn absent(key: &str) -> Compare {
    compare_create(key, Vec::new(), compare::CompareResult::Equal)
}

/// "`key` exists".
pub fn present(key: &str) -> Compare {
    compare_create(key, Vec::new(), compare::CompareResult::Greater)
}

/// "No key starting with `prefix` exists".
pub fn none_under(prefix: &str) -> Compare {
    compare_create(prefix, prefix_end(prefix), compare::CompareResult::Equal)
}

fn compare_create(key: &str, range_end: Vec<u8>, result: compare::CompareResult) -> Compare {
    Compare {
        result: result as i32,
        target: compare::CompareTarget::Create as i32,
        key: key.as_bytes().to_vec(),
        range_end,
        target_union: Some(compare::TargetUnion::CreateRevision(0)),
    }
}

/// "`key` holds `value`" (false when it does not exist).
pub fn holds(key: &str, value: &str) -> Compare {
    Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Value as i32,
        key: key.as_bytes().to_vec(),
        range_end: Vec::new(),
        target_union: Some(compare::TargetUnion::Value(value.as_bytes().to_vec())),
    }
}

pub fn put(key: &str, value: &str, lease: i64) -> RequestOp {
    let put = pb::PutRequest { key: key.into(), value: value.into(), lease, ..Default::default() };
    RequestOp { request: Some(request_op::Request::RequestPut(put)) }
}

pub fn get(key: &str) -> RequestOp {
    let range = pb::RangeRequest { key: key.into(), ..Default::default() };
    RequestOp { request: Some(request_op::Request::RequestRange(range)) }
}

pub fn get_prefix(prefix: &str) -> RequestOp {
    let range = pb::RangeRequest { key: prefix.into(), range_end: prefix_end(prefix), ..Default::default() };
    RequestOp { request: Some(request_op::Request::RequestRange(range)) }
}

pub fn delete(key: &str) -> RequestOp {
    let delete = pb::DeleteRangeRequest { key: key.into(), ..Default::default() };
    RequestOp { request: Some(request_op::Request::RequestDeleteRange(delete)) }
}

/// Delete `key` only while it holds `value` (a nested transaction).
pub fn delete_if_holds(key: &str, value: &str) -> RequestOp {
    let txn = TxnRequest { compare: vec![holds(key, value)], success: vec![delete(key)], failure: vec![] };
    RequestOp { request: Some(request_op::Request::RequestTxn(txn)) }
}

/// The address claims among an endpoint's records (each holds its id).
pub fn claims(records: &[(String, String)]) -> impl Iterator<Item = &(String, String)> {
    records.iter().filter(|(key, _)| records::is_claim_key(key))
}

/// Put an endpoint's records under `lease` if its claims are `held` by it
/// already (a refresh) or, with `held` false, if none of them exists.
pub fn republish(records: &[(String, String)], lease: i64, held: bool) -> TxnRequest {
    let compare = claims(records).map(|(key, id)| if held { holds(key, id) } else { absent(key) }).collect();
    TxnRequest { compare, success: records.iter().map(|(k, v)| put(k, v, lease)).collect(), failure: vec![] }
}

/// Withdraw an endpoint's records: its claims only while they are its own.
pub fn withdraw(records: &[(String, String)]) -> TxnRequest {
    let success = records
        .iter()
        .map(|(key, value)| if records::is_claim_key(key) { delete_if_holds(key, value) } else { delete(key) })
        .collect();
    TxnRequest { compare: vec![], success, failure: vec![] }
}

/// The end of the key range holding every key that starts with `prefix`.
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().expect("a non-empty prefix") += 1;
    end
}

/// The store's revision after `response`, if it changed anything (a put,
/// or a delete that found its key): only then does a watch event follow.
pub fn changed_revision(epoch: u64, response: &pb::TxnResponse) -> Option<Revision> {
    changed(&response.responses).then(|| Revision::of(epoch, response.header.as_ref()))
}

fn changed(responses: &[pb::ResponseOp]) -> bool {
    use pb::response_op::Response;
    responses.iter().any(|r| match &r.response {
        Some(Response::ResponsePut(_)) => true,
        Some(Response::ResponseDeleteRange(d)) => d.deleted > 0,
        Some(Response::ResponseTxn(t)) => changed(&t.responses),
        _ => false,
    })
}

/// The keys and values a transaction's reads found.
pub fn range_values(response: &pb::TxnResponse) -> impl Iterator<Item = (&str, &[u8])> {
    let ranges = response.responses.iter().filter_map(|r| match &r.response {
        Some(pb::response_op::Response::ResponseRange(range)) => Some(range),
        _ => None,
    });
    ranges
        .flat_map(|range| range.kvs.iter())
        .map(|kv| (std::str::from_utf8(&kv.key).unwrap_or(""), kv.value.as_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_range_ends_past_every_key_under_it() {
        assert_eq!(prefix_end("/a/b/"), b"/a/b0".to_vec());
    }

    #[test]
    fn only_claims_are_compared_and_withdrawn_conditionally() {
        let records = vec![
            ("/vswitch/v1/ipam/ov/10.0.0.2".to_string(), "id1".to_string()),
            ("/vswitch/v1/endpoints/ov/id1".to_string(), "{}".to_string()),
        ];
        let refresh = republish(&records, 7, true);
        assert_eq!(refresh.compare.len(), 1, "the endpoint record is not compared");
        assert_eq!(refresh.success.len(), 2);
        let withdrawn = withdraw(&records);
        assert!(matches!(withdrawn.success[0].request, Some(request_op::Request::RequestTxn(_))));
        assert!(matches!(withdrawn.success[1].request, Some(request_op::Request::RequestDeleteRange(_))));
    }

    #[test]
    fn only_changes_bring_a_revision_to_wait_for() {
        use pb::response_op::Response;
        let answer = |responses: Vec<Response>| pb::TxnResponse {
            header: Some(pb::ResponseHeader { revision: 9, ..Default::default() }),
            succeeded: true,
            responses: responses.into_iter().map(|r| pb::ResponseOp { response: Some(r) }).collect(),
        };
        let nothing_deleted = Response::ResponseDeleteRange(pb::DeleteRangeResponse::default());
        assert_eq!(changed_revision(0, &answer(vec![nothing_deleted])), None);
        let put = Response::ResponsePut(pb::PutResponse::default());
        assert_eq!(changed_revision(0, &answer(vec![put])).map(|r| r.number), Some(9));
    }
}
