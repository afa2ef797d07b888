"""The dashboard's files are served by the app itself, and name no other host."""

from __future__ import annotations

from services.dashboard.resources import STATIC


def test_the_page_is_served_at_the_root_with_a_self_only_content_security_policy(client):
    page = client.simulate_get("/")
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "Collect Tasks" in page.text
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "connect-src 'self'" in policy
    for asset in ("app.js", "app.css", "favicon.svg"):
        assert f"/dashboard/assets/{asset}" in page.text
        served = client.simulate_get(f"/dashboard/assets/{asset}")
        assert served.status_code == 200, asset
        assert served.content == (STATIC / asset).read_bytes()


def test_no_file_of_the_dashboard_names_another_host():
    for path in STATIC.iterdir():
        text = path.read_text(encoding="utf-8")
        # The SVG's XML namespace is an identifier, not a request.
        assert "://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', ""), path.name
