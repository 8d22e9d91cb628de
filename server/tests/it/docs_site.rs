//! The documentation site in a real browser: Debian's chromium, headless, driven through
//! chromedriver. Opens the home page, clicks through to a model, then through its lineage
//! graph to the upstream source, checks what each page shows, and saves a screenshot as a
//! test artifact (`target/tmp/docs-site-*.png`).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};

use crate::support::TestServer;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// chromedriver on a free loopback port, killed on drop.
struct Driver(Child, u16);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start_browser() -> Option<(Driver, Client)> {
    if !std::path::Path::new(CHROMEDRIVER).exists() || !std::path::Path::new(CHROMIUM).exists() {
        let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(
            !in_ci,
            "chromium and chromium-driver are not installed (.ci/run installs them)"
        );
        eprintln!("skipped: no chromium/chromedriver (apt-get install chromium chromium-driver)");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let driver = Driver(child, port);
    let caps: serde_json::Map<String, serde_json::Value> =
        serde_json::from_value(serde_json::json!({
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless", "--no-sandbox", "--disable-background-networking",
                         "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"]
            }
        }))
        .unwrap();
    let url = format!("http://127.0.0.1:{}", driver.1);
    for _ in 0..100 {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(client) => return Some((driver, client)),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("chromedriver did not accept a session at {url}");
}

async fn heading(client: &Client, expected: &str) -> String {
    let h1 = client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::XPath(&format!("//h1[contains(., '{expected}')]")))
        .await
        .unwrap_or_else(|e| panic!("no heading with {expected}: {e}"));
    h1.text().await.unwrap()
}

#[tokio::test]
async fn a_reader_clicks_from_the_home_page_through_lineage_to_a_source() {
    let Some((_driver, client)) = start_browser().await else {
        return;
    };
    let (server, _dir) = TestServer::start(&[]);
    let db = server.connect().await;
    db.batch_execute(
        "CREATE SCHEMA raw; CREATE SCHEMA marts;
         CREATE SOURCE raw.orders FROM FILES 'sqllogictests/data/orders.csv' FORMAT CSV;
         COMMENT ON SOURCE raw.orders IS 'Orders as the shop exports them';
         CREATE MODEL marts.revenue WITH (description = 'Revenue per customer') AS
           SELECT customer, sum(amount) AS revenue FROM raw.orders GROUP BY customer;
         COMMENT ON COLUMN marts.revenue.revenue IS 'Sum of order amounts';
         CREATE TEST revenue_customer_unique ON marts.revenue EXPECT UNIQUE (customer);
         RUN TESTS;",
    )
    .await
    .unwrap();
    let site = format!("http://127.0.0.1:{}", server.http_port);
    let artifacts = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));

    client.goto(&format!("{site}/")).await.unwrap();
    heading(&client, "Catalog").await;
    let home = client.source().await.unwrap();
    assert!(home.contains("Revenue per customer"), "{home}");
    assert!(home.contains("Orders as the shop exports them"));

    client
        .find(Locator::LinkText("marts.revenue"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert!(heading(&client, "marts.revenue").await.contains("model"));
    let page = client.source().await.unwrap();
    assert!(page.contains("revenue_customer_unique"));
    assert!(page.contains("Sum of order amounts"));
    assert!(
        page.contains("raw.orders.amount"),
        "column lineage of revenue"
    );
    std::fs::write(
        artifacts.join("docs-site-model.png"),
        client.screenshot().await.unwrap(),
    )
    .unwrap();

    // Columns on demand, then through the graph to the upstream source.
    client
        .find(Locator::LinkText("show columns"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("svg.lineage path.column-edge"))
        .await
        .expect("column edges drawn");
    client
        .find(Locator::Css("svg.lineage a[data-object='raw.orders']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert!(heading(&client, "raw.orders").await.contains("source"));
    let page = client.source().await.unwrap();
    assert!(page.contains("Orders as the shop exports them"));
    assert!(
        client
            .find(Locator::Css("svg.lineage a[data-object='marts.revenue']"))
            .await
            .is_ok(),
        "the source's graph shows its downstream model"
    );
    std::fs::write(
        artifacts.join("docs-site-source.png"),
        client.screenshot().await.unwrap(),
    )
    .unwrap();
    client.close().await.unwrap();
}
