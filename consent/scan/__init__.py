"""The cookie scanner: what a site's pages really set, before and after a choice.

``crawl`` drives Chromium through the pages in three passes (before any choice, after
"Reject all", after "Accept all"), ``classify`` names what it saw from the site's own
inventory and the Open Cookie Database, ``findings`` compares the two, ``report`` prints
and serialises the result and ``store`` keeps scans in the database. Only ``crawl``
needs Playwright (the ``consent[scan]`` extra); the rest is plain Python.
"""
