use super::*;

const S: Duration = Duration::from_secs(1);

/// (endpoint dialled, backoff after it) for `n` attempts that each fail at once.
fn failures(r: &mut Rotation, n: usize) -> Vec<(usize, u64)> {
    (0..n)
        .map(|_| {
            let at = r.current();
            (at, r.ended(Duration::ZERO).as_secs())
        })
        .collect()
}

#[test]
fn one_endpoint_doubles_after_every_failure() {
    let mut r = Rotation::new(1, S, 8 * S);
    assert_eq!(
        failures(&mut r, 6),
        [(0, 1), (0, 2), (0, 4), (0, 8), (0, 8), (0, 8)]
    );
}

#[test]
fn several_endpoints_take_turns_and_double_per_lap() {
    let mut r = Rotation::new(3, S, 8 * S);
    assert_eq!(
        failures(&mut r, 9),
        [
            (0, 1),
            (1, 1),
            (2, 1),
            (0, 2),
            (1, 2),
            (2, 2),
            (0, 4),
            (1, 4),
            (2, 4)
        ]
    );
}

#[test]
fn a_long_lived_connection_resets_the_backoff_and_moves_on() {
    let mut r = Rotation::new(2, S, 8 * S);
    failures(&mut r, 6);
    assert_eq!(r.current(), 0);
    // Connected to endpoint 0 for a while, then lost: the next endpoint, at once.
    assert_eq!(r.ended(9 * S), S);
    assert_eq!(r.current(), 1);
    assert_eq!(failures(&mut r, 3), [(1, 1), (0, 2), (1, 2)]);
}
