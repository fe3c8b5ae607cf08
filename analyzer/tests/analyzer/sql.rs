//! SQL → tables read, written and created.

use ficus_analyzer::sql::{created_tables, tables};

#[test]
fn reads_writes_and_ctes() {
    let cases: &[(&str, &[&str], &[&str])] = &[
        (
            "SELECT p.id FROM products p JOIN categories c ON c.id = p.category_id WHERE p.id = $1",
            &["categories", "products"],
            &[],
        ),
        ("INSERT INTO orders (a) VALUES (?) RETURNING id", &[], &["orders"]),
        (
            "INSERT INTO carts (user_id) VALUES ($1) ON CONFLICT (user_id) DO UPDATE SET updated_at = $2",
            &[],
            &["carts"],
        ),
        ("UPDATE inventory SET stock = stock - $1 WHERE product_id = $3 AND stock >= $1", &[], &["inventory"]),
        ("DELETE FROM cart_items WHERE user_id = $1", &[], &["cart_items"]),
        (
            "WITH recent AS (SELECT * FROM orders) SELECT * FROM recent JOIN users u ON u.id = recent.user_id",
            &["orders", "users"],
            &[],
        ),
        (
            "INSERT INTO archive SELECT * FROM public.orders WHERE id IN (SELECT order_id FROM payments)",
            &["orders", "payments"],
            &["archive"],
        ),
        ("UPDATE a SET x = 1 FROM b WHERE a.id = b.id", &["b"], &["a"]),
        ("SELECT * FROM t WHERE a = ?1", &["t"], &[]),
        (
            "WITH inserted AS (INSERT INTO article (title) VALUES ($1) RETURNING id) SELECT a.id, u.name FROM inserted a JOIN users u ON true",
            &["users"],
            &["article"],
        ),
    ];
    for (sql, reads, writes) in cases {
        let t = tables(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        let r: Vec<&str> = t.reads.iter().map(String::as_str).collect();
        let w: Vec<&str> = t.writes.iter().map(String::as_str).collect();
        assert_eq!(r, reads.to_vec(), "reads of {sql}");
        assert_eq!(w, writes.to_vec(), "writes of {sql}");
    }
}

#[test]
fn migrations_define_tables_even_with_statements_the_parser_refuses() {
    let script = "-- c\nCREATE TABLE users (id INTEGER PRIMARY KEY);\nCREATE TABLE IF NOT EXISTS \"Posts\" (id int);\nCREATE INDEX x ON users (id);";
    assert_eq!(created_tables(script).into_iter().collect::<Vec<_>>(), vec!["posts", "users"]);
    let odd = "CREATE TABLE a (x int);\nCREATE TABLE b (x WEIRD TYPE !!);";
    assert_eq!(created_tables(odd).into_iter().collect::<Vec<_>>(), vec!["a", "b"]);
}

#[test]
fn not_sql_is_an_error_not_a_panic() {
    assert!(tables("SELECT FROM WHERE (((").is_err());
}
