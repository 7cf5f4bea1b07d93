use proptest::prelude::*;

use super::*;

fn subject() -> Subject<'static> {
    Subject {
        name: "My Game",
        id: "qcs::gse:local:uin/0:gameserversession/fleet-1/gssess-1",
        maximum_sessions: 10,
        creation_time_millis: 1_700_000_000_000,
        player_session_count: 3,
        has_available_player_sessions: true,
        properties: [("gameMode", "brawl"), ("level", "12")].into(),
    }
}

#[test]
fn gse_examples_parse_and_match() {
    let s = subject();
    for (text, want) in [
        (r#"gameServerSessionName = "My Game""#, true),
        ("gameServerSessionName = 'my game'", false),
        (
            "hasAvailablePlayerSessions = true AND playerSessionCount < 5",
            true,
        ),
        (
            "maximumSessions >= 10 and not playerSessionCount = 3",
            false,
        ),
        (
            "NOT (maximumSessions > 20 OR playerSessionCount <> 3)",
            true,
        ),
        ("gameServerSessionProperties.gameMode = 'brawl'", true),
        ("gameServerSessionProperties.level > 9", true),
        ("gameServerSessionProperties.level > '9'", false),
        ("gameServerSessionProperties.missing <> 'x'", true),
        ("gameServerSessionProperties.missing = 'x'", false),
        ("creationTimeMillis > 1600000000000", true),
    ] {
        let e = parse_filter(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(e.matches(&s), want, "{text}");
    }
}

#[test]
fn and_binds_tighter_than_or_and_not_tighter_than_and() {
    let e = parse_filter(
        "playerSessionCount = 1 OR playerSessionCount = 2 AND NOT maximumSessions = 3",
    )
    .unwrap();
    let cmp = |f: Field, n| Expr::Cmp(f, Op::Eq, Value::Int(n));
    assert_eq!(
        e,
        Expr::Or(
            Box::new(cmp(Field::PlayerSessionCount, 1)),
            Box::new(Expr::And(
                Box::new(cmp(Field::PlayerSessionCount, 2)),
                Box::new(Expr::Not(Box::new(cmp(Field::MaximumSessions, 3)))),
            )),
        )
    );
}

#[test]
fn errors_name_the_position_and_what_was_expected() {
    for (text, position, needle) in [
        ("", 0, "empty"),
        ("playerCount = 1", 0, "is not a field"),
        ("playerSessionCount 1", 19, "expected an operator"),
        ("playerSessionCount = ", 21, "expected a value"),
        ("playerSessionCount = 'x'", 21, "is not a value"),
        ("gameServerSessionName = 5", 24, "is not a value"),
        ("hasAvailablePlayerSessions > true", 29, "= or <> only"),
        ("(playerSessionCount = 1", 23, "expected `)`"),
        (
            "playerSessionCount = 1 playerSessionCount = 2",
            23,
            "expected `AND`, `OR`",
        ),
        ("gameServerSessionName = 'open", 24, "not closed"),
        ("playerSessionCount = 1 ; drop", 23, "unexpected character"),
        ("gameServerSessionProperties. = 'x'", 0, "is not a field"),
    ] {
        let e = parse_filter(text).unwrap_err();
        assert_eq!(e.position, position, "{text}: {e}");
        assert!(e.message.contains(needle), "{text}: {e}");
    }
    let deep = format!(
        "{}playerSessionCount = 1{}",
        "(".repeat(100),
        ")".repeat(100)
    );
    assert!(parse_filter(&deep).unwrap_err().message.contains("64 deep"));
    assert!(parse_filter(&"x".repeat(MAX_LEN + 1)).is_err());
}

#[test]
fn sort_expressions() {
    assert_eq!(
        parse_sort("creationTimeMillis desc").unwrap(),
        Sort {
            field: Field::CreationTimeMillis,
            descending: true
        }
    );
    assert!(
        !parse_sort("gameServerSessionProperties.level ASC")
            .unwrap()
            .descending
    );
    for bad in [
        "",
        "creationTimeMillis",
        "creationTimeMillis UP",
        "nope ASC",
        "= ASC",
    ] {
        assert!(parse_sort(bad).is_err(), "{bad}");
    }
}

#[test]
fn sorting_on_a_property_puts_sessions_without_it_last_and_numbers_in_number_order() {
    let with = |level: Option<&'static str>| Subject {
        properties: level.map(|l| ("level", l)).into_iter().collect(),
        ..Subject::default()
    };
    let (nine, ten, none) = (with(Some("9")), with(Some("10")), with(None));
    for descending in [false, true] {
        let sort = Sort {
            field: Field::Property("level".into()),
            descending,
        };
        assert_eq!(
            sort.cmp(&none, &nine),
            std::cmp::Ordering::Greater,
            "{descending}"
        );
        assert_eq!(
            sort.cmp(&nine, &none),
            std::cmp::Ordering::Less,
            "{descending}"
        );
    }
    let asc = Sort {
        field: Field::Property("level".into()),
        descending: false,
    };
    assert_eq!(asc.cmp(&nine, &ten), std::cmp::Ordering::Less);
}

// ---- properties: printed expressions parse back, and match as a reference evaluator says ----

fn field_strategy() -> impl Strategy<Value = Field> {
    prop_oneof![
        Just(Field::Name),
        Just(Field::Id),
        Just(Field::MaximumSessions),
        Just(Field::CreationTimeMillis),
        Just(Field::PlayerSessionCount),
        Just(Field::HasAvailablePlayerSessions),
        "[a-z]{1,3}".prop_map(Field::Property),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        Just(Op::Eq),
        Just(Op::Ne),
        Just(Op::Gt),
        Just(Op::Ge),
        Just(Op::Lt),
        Just(Op::Le)
    ]
}

fn cmp_strategy() -> impl Strategy<Value = Expr> {
    (
        field_strategy(),
        op_strategy(),
        "[a-c ]{0,3}",
        -3i64..15,
        any::<bool>(),
    )
        .prop_map(|(f, op, text, n, b)| match f {
            Field::Name | Field::Id => Expr::Cmp(f, op, Value::Text(text)),
            Field::HasAvailablePlayerSessions => Expr::Cmp(
                f,
                if matches!(op, Op::Eq | Op::Gt | Op::Ge) {
                    Op::Eq
                } else {
                    Op::Ne
                },
                Value::Bool(b),
            ),
            Field::Property(_) if b => Expr::Cmp(f, op, Value::Text(text)),
            _ => Expr::Cmp(f, op, Value::Int(n)),
        })
}

fn expr_strategy() -> impl Strategy<Value = Expr> {
    cmp_strategy().prop_recursive(5, 32, 2, |inner| {
        prop_oneof![
            inner.clone().prop_map(|e| Expr::Not(Box::new(e))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Expr::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner).prop_map(|(a, b)| Expr::Or(Box::new(a), Box::new(b))),
        ]
    })
}

fn field_name(f: &Field) -> String {
    match f {
        Field::Name => "gameServerSessionName".into(),
        Field::Id => "gameServerSessionId".into(),
        Field::MaximumSessions => "maximumSessions".into(),
        Field::CreationTimeMillis => "creationTimeMillis".into(),
        Field::PlayerSessionCount => "playerSessionCount".into(),
        Field::HasAvailablePlayerSessions => "hasAvailablePlayerSessions".into(),
        Field::Property(k) => format!("gameServerSessionProperties.{k}"),
    }
}

/// Prints with as few parentheses as precedence allows (so the parser's precedence and
/// associativity are what is tested), keywords in the case `upper` says.
fn print(e: &Expr, upper: bool) -> String {
    let kw = |k: &str| {
        if upper {
            k.to_string()
        } else {
            k.to_ascii_lowercase()
        }
    };
    // Precedence: OR 1, AND 2, NOT 3, comparison 4.
    fn level(e: &Expr) -> u8 {
        match e {
            Expr::Or(..) => 1,
            Expr::And(..) => 2,
            Expr::Not(_) => 3,
            Expr::Cmp(..) => 4,
        }
    }
    let wrap = |inner: &Expr, min: u8| {
        let s = print(inner, upper);
        if level(inner) < min {
            format!("({s})")
        } else {
            s
        }
    };
    match e {
        Expr::Cmp(f, op, v) => {
            let op = match op {
                Op::Eq => "=",
                Op::Ne => "<>",
                Op::Gt => ">",
                Op::Ge => ">=",
                Op::Lt => "<",
                Op::Le => "<=",
            };
            let v = match v {
                Value::Text(t) => format!("'{t}'"),
                Value::Int(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
            };
            format!("{} {op} {v}", field_name(f))
        }
        Expr::Not(a) => format!("{} {}", kw("NOT"), wrap(a, 3)),
        // Left-associative: the right operand of the same operator needs parentheses.
        Expr::And(a, b) => format!("{} {} {}", wrap(a, 2), kw("AND"), wrap(b, 3)),
        Expr::Or(a, b) => format!("{} {} {}", wrap(a, 1), kw("OR"), wrap(b, 2)),
    }
}

/// The reference: a direct reading of the rules in the module docs.
fn reference(e: &Expr, s: &Subject<'_>) -> bool {
    fn ord(o: std::cmp::Ordering, op: Op) -> bool {
        use std::cmp::Ordering::*;
        match op {
            Op::Eq => o == Equal,
            Op::Ne => o != Equal,
            Op::Gt => o == Greater,
            Op::Ge => o != Less,
            Op::Lt => o == Less,
            Op::Le => o != Greater,
        }
    }
    match e {
        Expr::Not(a) => !reference(a, s),
        Expr::And(a, b) => reference(a, s) && reference(b, s),
        Expr::Or(a, b) => reference(a, s) || reference(b, s),
        Expr::Cmp(f, op, v) => {
            let number = |have: i64| match v {
                Value::Int(n) => ord(have.cmp(n), *op),
                _ => false,
            };
            match f {
                Field::Name => matches!(v, Value::Text(t) if ord(s.name.cmp(t.as_str()), *op)),
                Field::Id => matches!(v, Value::Text(t) if ord(s.id.cmp(t.as_str()), *op)),
                Field::MaximumSessions => number(s.maximum_sessions),
                Field::CreationTimeMillis => number(s.creation_time_millis),
                Field::PlayerSessionCount => number(s.player_session_count),
                Field::HasAvailablePlayerSessions => {
                    matches!(v, Value::Bool(b) if ord(s.has_available_player_sessions.cmp(b), *op))
                }
                Field::Property(k) => match s.properties.get(k.as_str()) {
                    None => *op == Op::Ne,
                    Some(have) => match v {
                        Value::Text(t) => ord((*have).cmp(t.as_str()), *op),
                        Value::Int(n) => match have.parse::<i64>() {
                            Ok(h) => ord(h.cmp(n), *op),
                            Err(_) => *op == Op::Ne,
                        },
                        Value::Bool(_) => false,
                    },
                },
            }
        }
    }
}

fn subject_strategy() -> impl Strategy<Value = (String, i64, i64, bool, Vec<(String, String)>)> {
    (
        "[a-c ]{0,3}",
        -3i64..15,
        -3i64..15,
        any::<bool>(),
        proptest::collection::vec(("[a-z]{1,3}", "[a-c0-9]{0,2}"), 0..4),
    )
}

proptest! {
    #[test]
    fn printed_expressions_parse_back_and_match_as_the_reference_says(
        e in expr_strategy(),
        upper in any::<bool>(),
        subjects in proptest::collection::vec(subject_strategy(), 1..5),
    ) {
        let text = print(&e, upper);
        let parsed = parse_filter(&text).map_err(|err| TestCaseError::fail(format!("{text}: {err}")))?;
        prop_assert_eq!(&parsed, &e, "{}", text);
        for (name, max, count, available, props) in &subjects {
            let s = Subject {
                name,
                id: name,
                maximum_sessions: *max,
                creation_time_millis: *count,
                player_session_count: *count,
                has_available_player_sessions: *available,
                properties: props.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
            };
            prop_assert_eq!(parsed.matches(&s), reference(&e, &s), "{}", text);
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,80}") {
        let _ = parse_filter(&text);
        let _ = parse_sort(&text);
    }
}
