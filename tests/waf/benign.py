#!/usr/bin/env python3
"""Writes `benign.jsonl`: honest requests of the kinds a gateway carries (JSON
APIs, HTML forms, searches, pages with browser headers and cookies), for the
false-positive count of `tests/suite/waf.rs`. One JSON object a line:
`{"method", "uri", "headers": [[name, value]], "body"}`, no two alike.

Usage: `python3 benign.py > benign.jsonl`. Seeded: the output is the same on
every run.
"""

import json
import random
import urllib.parse

rng = random.Random(14)

BROWSERS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.82 Mobile Safari/537.36",
]
CLIENTS = [
    "curl/8.5.0", "python-requests/2.31.0", "okhttp/4.12.0", "Go-http-client/2.0",
    "axios/1.6.8", "PostmanRuntime/7.37.0", "MyShopApp/3.2.1 (iOS 17.4; iPhone15,2)",
]
NAMES = [
    "Siobhan O'Brien", "Jean-Luc Picard", "D'Angelo Russell", "Zoë Saldaña", "Renée Zellweger",
    "José Álvarez", "Mary-Kate O'Neil", "Björk Guðmundsdóttir", "Li Wei", "Nguyễn Văn An",
    "Ahmed Al-Farsi", "Ol' Dirty Bastard", "Shaquille O'Neal", "Conan O'Brien", "Dwayne 'The Rock' Johnson",
    "Anne-Marie d'Arcy", "François L'Heureux", "Søren Kierkegaard", "Małgorzata Wiśniewska", "山田 太郎",
]
SEARCHES = [
    "O'Reilly books", "rock & roll hall of fame", "how to select a good union representative",
    "where to drop off old batteries", "best restaurants near me", "C++ vs Rust performance",
    "what is 1+1", "wine & cheese pairing", "cheap flights paris -> london", "iphone 15 pro max 256gb",
    "don't stop believin' lyrics", "50% off shoes", "recipe: mac 'n' cheese", "\"exact phrase\" search",
    "how to delete a facebook account", "update ubuntu to 24.04", "insert coin arcade bar",
    "order by price low to high", "table and chairs set", "script writing course", "javascript tutorial for beginners",
    "alert signs of dehydration", "java vs kotlin", "sleep apnea treatment", "benchmark gpu 2024",
    "group by friends trip ideas", "having fun with kids", "select all that apply", "Union Station Chicago",
    "Dr. Martens 1460", "AT&T customer service", "M&M's peanut", "Ben & Jerry's", "#hashtag ideas",
    "5' 11\" in cm", "100 usd to eur", "Q&A session tips", "email@example.com not receiving mail",
    "weather tomorrow", "are crocs waterproof?", "size 10 1/2 sneakers", "what's the time in Tokyo",
    "tu vas bien ?", "¿dónde está la biblioteca?", "東京 ラーメン", "cafe latte art",
]
COMMENTS = [
    "Great product, would buy again! 5/5",
    "Didn't fit well -- had to return it. Customer service was helpful though.",
    "I'd recommend this to anyone who's into hiking; it's light & sturdy.",
    "Shipping took 3-5 days (as promised). Packaging: excellent.",
    "Works with my 2019 MacBook Pro. Note: you need a USB-C adapter.",
    "The \"premium\" version isn't worth the extra $20, IMO.",
    "Line 1\nLine 2\nLine 3 with some trailing thoughts...",
    "Is this compatible with Windows 11? Thanks in advance :)",
    "Colour is more blue than purple in person. Still 4 stars.",
    "Love it!!! 😍😍 Bought one for my mum too.",
    "Meh. It's OK for the price, but the zipper broke after a week.",
    "Can you select a different size after ordering? I picked M but need L.",
    "We ordered 2 tables and 8 chairs; one chair arrived damaged.",
    "Please update the manual: step 4 says 'insert tab A into slot B' but there's no slot B.",
    "My son (age 7) loves it. He uses it every day after school.",
    "Tried it on my 1/2\" pipe: fits perfectly, no leaks.",
    "Version 2.0 is much better than 1.x; the union of both feature sets, really.",
    "Not sure why people complain, mine works fine. Rating: 10/10 would recommend.",
    "Ça marche très bien, merci ! Livraison rapide.",
    "Muy buena calidad, llegó antes de lo esperado.",
]
MARKDOWN = [
    "# Release notes\n\n## 2.3.0\n\n- Fixed a crash when the list is empty\n- Added `--verbose` flag\n\nSee [the docs](https://docs.example.com/cli#flags).",
    "**Bold** and _italic_ text, a [link](https://example.org/a?b=c&d=e) and an image ![alt](https://cdn.example.com/i.png).",
    "1. Preheat the oven to 180°C\n2. Mix flour & sugar\n3. Bake for 25-30 minutes\n\n> Tip: don't open the door!",
    "```python\nfor i in range(10):\n    print(i)\n```",
    "| Name | Qty |\n|------|-----|\n| Apples | 3 |\n| Pears | 5 |",
    "Meeting notes 2024-05-14:\n* Alice: finish the Q2 report\n* Bob: review PR #482\n* Next meeting: Thursday @ 10am",
    "Hello @channel, the deploy is done :tada: -- ping me if anything looks off.",
    "Use `git rebase -i HEAD~3` to squash the last three commits.",
]
PATHS = [
    "/", "/index.html", "/about", "/contact", "/products", "/products/12345", "/products/12345/reviews",
    "/blog/2024/05/14/how-to-write-better-sql-queries", "/blog/tags/javascript", "/docs/getting-started",
    "/docs/api/v2/users", "/static/css/main.3f9a1c.css", "/static/js/app.bundle.min.js", "/images/logo@2x.png",
    "/favicon.ico", "/robots.txt", "/sitemap.xml", "/account/settings", "/cart", "/checkout/shipping",
    "/api/v1/health", "/api/v1/orders/ord_8f3k2j", "/api/v2/search", "/user/jdoe/profile", "/wiki/C%2B%2B",
    "/wiki/Rock_%26_roll", "/files/report-2024-Q1.pdf", "/category/home-garden/outdoor-furniture",
    "/en-us/help/faq", "/de/produkte/schuhe", "/shop/item/select-union-suit-red", "/events/2024/script-summit",
]
COOKIES = [
    "_ga=GA1.2.1876543210.1715700000; _gid=GA1.2.987654321.1715786400",
    "sessionid=8f14e45fceea167a5a36dedd4bea2543; csrftoken=Xy7Pq2LmN8vR4sT6uW0zA1bC3dE5fG7h",
    "JSESSIONID=4D5E6F7A8B9C0D1E2F3A4B5C6D7E8F90; lang=en-US",
    "theme=dark; consent=%7B%22ads%22%3Afalse%2C%22analytics%22%3Atrue%7D",
    "cart_id=c_91827364; currency=EUR; recently_viewed=12345%2C67890%2C24680",
    "PHPSESSID=3c1f6e2a9b8d7c6e5f4a3b2c1d0e9f8a",
    "auth_token=eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
    "_fbp=fb.1.1715700000000.1234567890; _hjSessionUser_123=eyJpZCI6ImFiYyJ9",
]
LANGS = ["en-US,en;q=0.9", "fr-FR,fr;q=0.9,en;q=0.8", "de-DE,de;q=0.9", "es-ES,es;q=0.9,en;q=0.5", "ja-JP,ja;q=0.9"]
ACCEPT_HTML = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
DOMAINS = ["https://www.google.com/", "https://duckduckgo.com/", "https://news.ycombinator.com/item?id=40123456",
           "https://www.example.com/products?page=2&sort=price", "https://t.co/abc123XYZ", "https://www.bing.com/search?q=shoes&form=QBLH"]


def q(params):
    return urllib.parse.urlencode(params, quote_via=urllib.parse.quote)


def browser_headers(referer=True):
    headers = [
        ["User-Agent", rng.choice(BROWSERS)],
        ["Accept", ACCEPT_HTML],
        ["Accept-Language", rng.choice(LANGS)],
        ["Accept-Encoding", "gzip, deflate, br"],
    ]
    if referer:
        headers.append(["Referer", rng.choice(DOMAINS)])
    if rng.random() < 0.7:
        headers.append(["Cookie", rng.choice(COOKIES)])
    return headers


def api_headers(content_type=None):
    headers = [["User-Agent", rng.choice(CLIENTS)], ["Accept", "application/json"]]
    if rng.random() < 0.6:
        headers.append(["Authorization", "Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.eyJzdWIiOiJ1XzQyIiwic2NvcGUiOiJyZWFkIHdyaXRlIn0.c2lnbmF0dXJl"])
    if content_type:
        headers.append(["Content-Type", content_type])
    return headers


def page():
    return {"method": "GET", "uri": rng.choice(PATHS), "headers": browser_headers(), "body": ""}


def search():
    params = {"q": rng.choice(SEARCHES)}
    if rng.random() < 0.5:
        params["page"] = str(rng.randint(1, 20))
    if rng.random() < 0.3:
        params["sort"] = rng.choice(["relevance", "-created_at", "price_asc", "rating desc"])
    if rng.random() < 0.3:
        params["filter[category]"] = rng.choice(["shoes", "books", "home & garden", "kids' toys"])
    return {"method": "GET", "uri": "/search?" + q(params), "headers": browser_headers(), "body": ""}


def api_list():
    params = {"page": str(rng.randint(1, 50)), "per_page": rng.choice(["10", "25", "100"])}
    extra = rng.choice([
        {"sort": "-updated_at"}, {"status": "active,pending"}, {"since": "2024-05-01T00:00:00Z"},
        {"fields": "id,name,email"}, {"q": rng.choice(NAMES)}, {"include": "author,comments"},
        {"created_after": "2024-01-01", "created_before": "2024-12-31"}, {"tags": "red,blue,green"},
    ])
    params.update(extra)
    return {"method": "GET", "uri": rng.choice(["/api/v1/users", "/api/v2/orders", "/api/v1/products", "/api/v1/articles"]) + "?" + q(params),
            "headers": api_headers(), "body": ""}


def json_post():
    name = rng.choice(NAMES)
    kind = rng.randrange(6)
    if kind == 0:
        body = {"name": name, "email": name.split()[0].lower().replace("'", "") + "@example.com",
                "address": {"line1": f"{rng.randint(1, 999)} Main St., Apt #{rng.randint(1, 40)}", "city": rng.choice(["Dublin", "Paris", "São Paulo", "New York"]), "zip": "D02 X285"},
                "newsletter": rng.random() < 0.5}
        uri = "/api/v1/users"
    elif kind == 1:
        body = {"order_id": f"ord_{rng.randint(10000, 99999)}", "items": [{"sku": f"SKU-{rng.randint(100, 999)}", "qty": rng.randint(1, 5), "price": round(rng.uniform(1, 200), 2)} for _ in range(rng.randint(1, 4))],
                "note": rng.choice(COMMENTS), "gift": False}
        uri = "/api/v2/orders"
    elif kind == 2:
        body = {"title": rng.choice(["Release notes", "Weekly update", "How we cut our build time in half", "Q&A: the new API"]), "body": rng.choice(MARKDOWN), "tags": ["news", "engineering"], "draft": True}
        uri = "/api/v1/articles"
    elif kind == 3:
        body = {"rating": rng.randint(1, 5), "review": rng.choice(COMMENTS), "author": name}
        uri = f"/api/v1/products/{rng.randint(1000, 9999)}/reviews"
    elif kind == 4:
        body = {"query": rng.choice(SEARCHES), "filters": {"price": {"min": 10, "max": 250}, "brand": ["Acme", "Globex"]}, "page": 1}
        uri = "/api/v2/search"
    else:
        body = {"event": rng.choice(["page_view", "add_to_cart", "checkout_started"]), "url": rng.choice(DOMAINS), "ts": 1715700000 + rng.randint(0, 100000),
                "props": {"referrer": rng.choice(DOMAINS), "screen": "1920x1080", "lang": "en-US"}}
        uri = "/api/v1/events"
    return {"method": rng.choice(["POST", "PUT"]) if kind < 3 else "POST", "uri": uri,
            "headers": api_headers("application/json"), "body": json.dumps(body, ensure_ascii=False)}


def form_post():
    name = rng.choice(NAMES)
    kind = rng.randrange(4)
    if kind == 0:
        fields = {"name": name, "email": "someone@example.org", "subject": rng.choice(["Question about my order", "Return request", "Feedback", "Partnership"]), "message": rng.choice(COMMENTS)}
        uri = "/contact"
    elif kind == 1:
        fields = {"username": name.split()[0].lower().replace("'", ""), "password": rng.choice(["P@ssw0rd!2024", "correct horse battery staple", "S3cure#Pass;word", "hunter2", "Tr0ub4dor&3"]), "remember": "on"}
        uri = "/login"
    elif kind == 2:
        fields = {"first_name": name.split()[0], "last_name": name.split()[-1], "address": f"{rng.randint(1, 200)} O'Connell Street", "city": "Dublin", "phone": "+353 1 234 5678", "notes": rng.choice(COMMENTS)}
        uri = "/checkout/shipping"
    else:
        fields = {"comment": rng.choice(COMMENTS + MARKDOWN), "post_id": str(rng.randint(1, 5000)), "author": name}
        uri = "/blog/comments"
    return {"method": "POST", "uri": uri, "headers": browser_headers() + [["Content-Type", "application/x-www-form-urlencoded"]], "body": q(fields)}


def main():
    makers = [(page, 60), (search, 70), (api_list, 40), (json_post, 80), (form_post, 60)]
    seen = set()
    for make, count in makers:
        made = 0
        while made < count:
            line = json.dumps(make(), ensure_ascii=False)
            if line not in seen:
                seen.add(line)
                made += 1
                print(line)


if __name__ == "__main__":
    main()
