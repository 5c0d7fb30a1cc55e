"""A compact inline SVG QR code (horizontal runs merged: ~2 KB, not ~10 KB)."""

from __future__ import annotations

from markupsafe import Markup


def qr_svg(data: str, *, label: str) -> Markup:
    """SVG markup of a QR code for ``data`` (medium error correction).

    qrcode is imported here, by the one page that shows a code (issue 15, memory).
    """
    import qrcode

    qr = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=2)
    qr.add_data(data)
    qr.make(fit=True)
    matrix: list[list[bool]] = qr.get_matrix()
    size = len(matrix)
    parts: list[str] = []
    for y, row in enumerate(matrix):
        x = 0
        while x < size:
            if row[x]:
                start = x
                while x < size and row[x]:
                    x += 1
                parts.append(f"M{start} {y}h{x - start}v1h-{x - start}z")
            else:
                x += 1
    path = "".join(parts)
    return Markup(
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {n} {n}" width="180" '
        'height="180" role="img" aria-label="{label}" shape-rendering="crispEdges">'
        '<rect width="{n}" height="{n}" fill="#fff"/><path d="{path}" fill="#000"/></svg>'
    ).format(n=size, label=label, path=path)
