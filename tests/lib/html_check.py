#!/usr/bin/python3
"""Parse an HTML page with Python's html.parser and print, as JSON, what a
test checks: the tags that occur, the text of each <td class="name"> and
<td class="file">, the <h2> headings, and whether the page has external
resources (src= or href= other than #anchors). usage: html_check.py FILE"""
import json
import sys
from html.parser import HTMLParser


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}


class Page(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.names, self.files, self.h2 = set(), [], [], []
        self.external, self.open, self.stack = [], None, []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        if tag not in VOID:
            self.stack.append(tag)
        for k in ("src", "href"):
            if k in a and not a[k].startswith("#"):
                self.external.append(a[k])
        if tag == "td" and a.get("class") in ("name", "file"):
            self.open = (a["class"], [])
        elif tag == "h2":
            self.open = ("h2", [])

    def handle_endtag(self, tag):
        if self.stack and self.stack[-1] == tag:
            self.stack.pop()
        else:
            self.stack.append("/" + tag)  # an end tag that closes nothing open
        if self.open and tag in ("td", "h2"):
            kind, parts = self.open
            {"name": self.names, "file": self.files, "h2": self.h2}[kind].append("".join(parts))
            self.open = None

    def handle_data(self, data):
        if self.open:
            self.open[1].append(data)


p = Page()
with open(sys.argv[1], encoding="utf-8") as f:
    p.feed(f.read())
p.close()
print(json.dumps({"tags": sorted(p.tags), "names": p.names, "files": p.files, "h2": p.h2,
                  "external": p.external, "unclosed": p.stack}))
