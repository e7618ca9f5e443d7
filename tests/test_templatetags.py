from django.template import Context, Template


def render(settings=None):
    return Template("{% load supalytics %}{% supalytics_visitor_header %}").render(Context())


def test_script_names_the_configured_header(settings):
    assert '"X-Supalytics-Visitor-Id"' in render()
    settings.SUPALYTICS = {**settings.SUPALYTICS, "HEADER_NAME": "X-Vid"}
    html = render()
    assert '"X-Vid"' in html and "X-Supalytics-Visitor-Id" not in html
    assert html.startswith("<script>") and html.endswith("</script>")
    assert "location.origin" in html  # only same-origin requests carry the ID


def test_a_hostile_header_name_cannot_close_the_script(settings):
    # supalytics.E012 refuses it; the tag escapes it all the same.
    settings.SUPALYTICS = {**settings.SUPALYTICS, "HEADER_NAME": "</script><img src=x>&"}
    html = render()
    assert html.count("</script>") == 1 and html.endswith("</script>")
    assert "<img" not in html and "\\u003c/script\\u003e" in html


def test_the_script_carries_the_csp_nonce_of_the_request(rf):
    request = rf.get("/")
    request.csp_nonce = "n0nce"  # django-csp's attribute
    html = Template("{% load supalytics %}{% supalytics_visitor_header %}").render(
        Context({"request": request})
    )
    assert html.startswith('<script nonce="n0nce">')


def test_the_script_carries_a_csp_nonce_from_the_context():
    html = Template("{% load supalytics %}{% supalytics_visitor_header %}").render(
        Context({"csp_nonce": 'a"b'})  # Django 6.0's csp context processor
    )
    assert html.startswith('<script nonce="a&quot;b">')


def test_no_nonce_no_attribute():
    assert render().startswith("<script>(function(){")
