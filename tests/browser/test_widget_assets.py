"""How the app serves the widget files: caching, compression, CORS, CORP, SRI."""

from __future__ import annotations

import base64
import gzip
import hashlib

import brotli
import pytest

from consent.widget import embed_snippet, load_asset


@pytest.fixture
def client(live_app, live_server):
    """The served app's client; ``live_server`` seeds the demo site the bundle needs."""
    return live_app.test_client()


@pytest.mark.parametrize("name", ["consent.js", "consent.css"])
def test_widget_file_is_cacheable_and_loadable_from_any_page(client, name):
    response = client.get(f"/widget/{name}", headers={"Accept-Encoding": "gzip"})

    assert response.status_code == 200
    assert response.headers["Content-Encoding"] == "gzip"
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.headers["Cross-Origin-Resource-Policy"] == "cross-origin"
    assert "max-age=86400" in response.headers["Cache-Control"]
    assert "Accept-Encoding" in response.headers["Vary"]
    etag = response.headers["ETag"]
    again = client.get(f"/widget/{name}", headers={"If-None-Match": etag})
    assert again.status_code == 304


def test_widget_is_served_plain_to_clients_without_gzip(client):
    response = client.get("/widget/consent.js", headers={"Accept-Encoding": "identity"})

    assert "Content-Encoding" not in response.headers
    assert response.data.startswith(b"(()=>{")
    assert response.mimetype == "text/javascript"


def test_versioned_url_is_immutable(client, live_app):
    with live_app.app_context():
        version = load_asset("consent.js").version
    response = client.get(f"/widget/consent.js?v={version}")

    assert "immutable" in response.headers["Cache-Control"]


def test_embed_snippet_carries_the_sri_hash_of_the_served_bytes(client, live_app):
    with live_app.app_context():
        snippet = str(embed_snippet("https://consent.example", "demo"))
    served = gzip.decompress(
        client.get("/widget/consent.js", headers={"Accept-Encoding": "gzip"}).data
    )
    integrity = "sha384-" + base64.b64encode(hashlib.sha384(served).digest()).decode()

    assert f'integrity="{integrity}"' in snippet
    assert 'data-site="demo"' in snippet
    assert snippet.startswith('<script src="https://consent.example/widget/consent.js?v=')


def test_script_carries_the_stylesheet(client):
    script = client.get("/widget/consent.js").get_data(as_text=True)

    assert ":host{all:initial;" in script  # the minified stylesheet, as a string constant
    assert 'site:{key:"' not in script  # no site's configuration in the plain script


def test_bundle_carries_the_site_configuration(client):
    script = client.get("/widget/consent.js?site=demo").get_data(as_text=True)
    response = client.get("/widget/consent.js?site=demo")

    assert 'config_hash:"' in script and 'site:{key:"demo"' in script
    assert response.headers["Cache-Control"] == "public, max-age=300"
    assert (
        client.get(
            "/widget/consent.js?site=demo", headers={"If-None-Match": response.headers["ETag"]}
        ).status_code
        == 304
    )


@pytest.mark.parametrize("encoding", ["br", "gzip"])
def test_scripts_are_sent_compressed(client, encoding):
    plain = client.get("/widget/consent.js").data
    packed = client.get("/widget/consent.js", headers={"Accept-Encoding": encoding})
    assert packed.headers["Content-Encoding"] == encoding
    unpack = brotli.decompress if encoding == "br" else gzip.decompress
    assert unpack(packed.data) == plain


def test_bundle_for_an_unknown_site_is_the_plain_script(client):
    plain = client.get("/widget/consent.js").data

    assert client.get("/widget/consent.js?site=nope").data == plain
